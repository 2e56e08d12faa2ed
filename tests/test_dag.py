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
    expected = {"pull", "synthesize@image_train", "synthesize@image_test", "synthesize@video_train",
                "synthesize@video_test", "train_image", "train_video", "qualitative", "report"}
    # One process per image subset (its 10 mask sources) and one for the video splits: a process per
    # benchmark cost about 7 s each.
    expected |= {f"evaluate_image@{a}" for a in subsets} | {"evaluate_video", "evaluate_video_frames"}
    # The video network also on this project's tracked guidance (test.video.tracked_masks).
    tracked = params["test"]["video"]["tracked_masks"]
    assert tracked == ["flow"]
    expected |= {f"track_masks@{t}" for t in tracked} | {f"evaluate_video_tracked@{t}" for t in tracked}
    # The default compares with the references; baselines (none by default) get stages of their own.
    refs = params["methods"]["references"]
    assert params["methods"]["baselines"] == []
    expected |= {f"evaluate_reference_image@{m}-{a}" for m in refs for a in subsets}
    expected |= {f"evaluate_reference_video@{m}" for m in refs}
    assert names == expected
    assert len(subsets) * len(sources) == 20 and len(splits) == 3
    ev = next(s for s in stages if s.name == f"evaluate_image@{subsets[0]}")
    assert f"--subset {subsets[0]} " in ev.cmd and "--source" not in ev.cmd
    assert f"eval/image/{subsets[0]}" in ev.outs and "test.image.mask_sources" in ev.params


def test_qualitative_stage_waits_for_the_folder_it_reads(stages):
    qual = next(s for s in stages if s.name == "qualitative")
    inputs = set(resolve_inputs(qual, stages))
    # test.qualitative.dir lies inside synthesize@video_test's output folder: Snakemake must wait for that stage.
    assert "data/V-HIM60" in inputs and "models/video/best.safetensors" in inputs
    assert "eval/qualitative" in resolve_inputs(next(s for s in stages if s.name == "report"), stages)


def test_report_waits_for_every_evaluation(stages):
    report = next(s for s in stages if s.name == "report")
    inputs = set(resolve_inputs(report, stages))
    for s in stages:
        if s.group.startswith("evaluate_"):
            assert set(s.outs) <= inputs, s.name


def threads(stage) -> int:
    from maggie.config.dag import resources

    return resources(load_params(REPO / "params.yaml"), stage.group).get("threads", 1)


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
    plan = snakemake("--dry-run", "--printshellcmds", "--forceall", "--cores", "2", "all")
    commands = dict(re.findall(r"^rule (\S+):.*?^Shell command: (.*?)$", plan, flags=re.S | re.M))
    for s in stages:
        assert commands.get(s.rule) == f"OMP_NUM_THREADS={min(threads(s), 2)} {s.cmd} > logs/{s.rule}.log 2>&1", s.name
        for out in s.outs:
            if out not in s.persistent:
                assert out in plan, (s.name, out)
    # The group target pulls in exactly its chain: no image evaluation for evaluate_video.
    chain = snakemake("--dry-run", "--forceall", "--cores", "1", "evaluate_video")
    assert "rule evaluate_video:" in chain and "train_video" in chain
    assert "evaluate_image__" not in chain and "rule report" not in chain


# ---- every stage depends on exactly the code it runs -----------------------------------------------------


def stage_module(stage) -> str:
    m = re.search(r"-m maggie\.stages\.(\w+)", stage.cmd)
    assert m, f"{stage.name}: its command does not run a module of maggie.stages: {stage.cmd}"
    return m.group(1)


def declared_code(stage) -> set[Path]:
    """The files under src/ that the stage's deps cover (folders expanded as DVC hashes them)."""
    from maggie.config.code_deps import _package_files

    files: set[Path] = set()
    for dep in stage.deps:
        path = REPO / dep
        if not dep.startswith("src/"):
            continue
        files.update(_package_files(path) if path.is_dir() else [path.resolve()])
    return {f.resolve() for f in files}


def test_every_stage_lists_exactly_the_import_closure_of_its_module(stages):
    from maggie.config.code_deps import stage_closure

    for s in stages:
        closure = {f.resolve() for f in stage_closure(stage_module(s))}
        declared = declared_code(s)
        missing = sorted(str(f.relative_to(REPO)) for f in closure - declared)
        extra = sorted(str(f.relative_to(REPO)) for f in declared - closure)
        assert not missing, f"{s.name}: dvc.yaml misses code it runs: {missing}"
        assert not extra, f"{s.name}: dvc.yaml lists code it does not run: {extra}"


def test_stage_modules_exist_and_are_named_like_their_stage_group(stages):
    for s in stages:
        module = stage_module(s)
        assert (REPO / "src" / "maggie" / "stages" / f"{module}.py").is_file()
        group = s.group
        for variant in ("_baseline", "_reference", "_frames", "_tracked"):
            group = group.replace(variant, "")
        assert group == module, f"{s.name} runs maggie.stages.{module}"


def test_the_library_never_imports_training_or_stage_code():
    from maggie.config.code_deps import closure

    for api in ("maggie.inference.predictor", "maggie.inference.export", "maggie.models", "maggie.cli"):
        names = {str(f.relative_to(REPO / "src")) for f in closure(api)}
        bad = sorted(n for n in names if n.startswith(("maggie/engine", "maggie/stages", "maggie/data/synth",
                                                        "maggie/data/fetch", "maggie/evaluation")))
        assert not bad, f"{api} imports {bad}"


def test_from_a_module_to_the_stages_it_affects():
    from maggie.config.code_deps import affected

    assert affected(REPO / "src/maggie/data/augment.py") == ["train_image", "train_video"]
    assert affected(REPO / "src/maggie/evaluation/report.py") == ["report"]
    assert "pull" in affected(REPO / "src/maggie/files.py")
