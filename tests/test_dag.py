"""DVC and Snakemake see the same pipeline: stages, commands and files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from maggie.config.dag import load_stages, resolve_inputs
from maggie.config.params import load_params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")


@pytest.fixture(scope="module")
def stages():
    return load_stages(REPO)


def test_dvc_resolves_the_expected_stages(stages):
    params = load_params(REPO / "params.yaml")
    subsets, sources = params["test"]["image"]["subsets"], params["test"]["image"]["mask_sources"]
    splits = params["test"]["video"]["splits"]
    names = {s.name for s in stages}
    expected = {"pull", "synth_image_train", "synth_image_test", "synth_video_train", "synth_video_test",
                "train_image", "train_video", "qualitative", "report"}
    expected |= {f"evaluate_image@{a}-{b}" for a in subsets for b in sources}
    expected |= {f"evaluate_video@{s}" for s in splits}
    # The default compares with the references; baselines (none by default) get stages of their own.
    refs = params["methods"]["references"]
    assert params["methods"]["baselines"] == []
    expected |= {f"evaluate_reference_image@{m}-{a}-{b}" for m in refs for a in subsets for b in sources}
    expected |= {f"evaluate_reference_video@{m}-{s}" for m in refs for s in splits}
    assert names == expected
    assert len([s for s in stages if s.group == "evaluate_image"]) == len(subsets) * len(sources) == 20
    ev = next(s for s in stages if s.name == f"evaluate_image@{subsets[0]}-{sources[0]}")
    assert f"--subset {subsets[0]} --source {sources[0]}" in ev.cmd
    assert f"eval/image/{subsets[0]}/{sources[0]}.json" in ev.outs


def test_qualitative_stage_waits_for_the_folder_it_reads(stages):
    qual = next(s for s in stages if s.name == "qualitative")
    inputs = set(resolve_inputs(qual, stages))
    # test.qualitative.dir lies inside synth_video_test's output folder: Snakemake must wait for that stage.
    assert "data/V-HIM60" in inputs and "models/video/best.safetensors" in inputs
    assert "eval/qualitative" in resolve_inputs(next(s for s in stages if s.name == "report"), stages)


def test_report_waits_for_every_evaluation(stages):
    report = next(s for s in stages if s.name == "report")
    inputs = set(resolve_inputs(report, stages))
    for s in stages:
        if s.group.startswith("evaluate_"):
            assert set(s.outs) <= inputs, s.name


def snakemake(*args: str) -> str:
    res = subprocess.run(["snakemake", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout + res.stderr


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_snakemake_has_a_rule_per_stage_and_group(stages):
    rules = set(snakemake("--list-rules").split())
    assert {s.rule for s in stages} <= rules
    assert {"all", "evaluate_image", "evaluate_video"} <= rules


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")
def test_snakemake_runs_the_same_commands_on_the_same_files(stages):
    plan = snakemake("--dry-run", "--printshellcmds", "--forceall", "--cores", "1", "all")
    commands = dict(re.findall(r"^rule (\S+):.*?^Shell command: (.*?)$", plan, flags=re.S | re.M))
    for s in stages:
        assert commands.get(s.rule) == s.cmd, s.name
        for out in s.outs:
            if out not in s.persistent:
                assert out in plan, (s.name, out)
    # The group target pulls in exactly its chain: no image evaluation for evaluate_video.
    chain = snakemake("--dry-run", "--forceall", "--cores", "1", "evaluate_video")
    assert "evaluate_video__comp_easy" in chain and "train_video" in chain
    assert "evaluate_image__" not in chain and "rule report" not in chain
