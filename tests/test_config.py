"""One configuration: params.yaml holds every default, one schema checks it, presets keep its comments."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maggie.config.params import LossWeights, ModelSettings, TrainSettings, check_schema, load_params
from maggie.config.presets import MARKER, apply_preset
from maggie.errors import ParamsError

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))


def test_stage_settings_hold_no_defaults_of_their_own():
    for cls in (LossWeights, ModelSettings, TrainSettings):
        with_default = [f.name for f in dataclasses.fields(cls)
                        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
        assert not with_default, f"{cls.__name__}: {with_default} (params.yaml is the only source of defaults)"


def test_every_preset_named_in_the_readme_exists_and_keeps_params_comments(tmp_path):
    readme = (REPO / "README.md").read_text()
    named = set(__import__("re").findall(r"python -m maggie\.preset (\w+)", readme))
    assert named - {"default"} <= set(PRESETS), named - set(PRESETS)
    original = (REPO / "params.yaml").read_text()
    comments = [line.split("#", 1)[1].strip() for line in original.splitlines() if "#" in line]
    for name in PRESETS:
        target = tmp_path / f"{name}.yaml"
        shutil.copy(REPO / "params.yaml", target)
        merged = apply_preset(name, target, REPO / "presets")
        text = target.read_text()
        assert text.startswith(f"{MARKER} {name}")
        kept = [c for c in comments if c in text]
        assert kept == comments, f"{name}: lost comments {sorted(set(comments) - set(kept))[:3]}"
        assert yaml.safe_load(text) == merged
        check_schema(load_params(target))
        over = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
        for section, values in over.items():
            if not isinstance(values, dict):
                assert merged[section] == values


def test_default_restores_the_committed_params(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "add", "params.yaml"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"], cwd=tmp_path, check=True)
    apply_preset("tiny", tmp_path / "params.yaml", REPO / "presets")
    assert (tmp_path / "params.yaml").read_text() != (REPO / "params.yaml").read_text()
    res = subprocess.run([sys.executable, "-m", "maggie.preset", "default", "--params", str(tmp_path / "params.yaml"),
                          "--presets", str(REPO / "presets")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()


@pytest.mark.parametrize("edit,needle", [
    (("train", "image", "max_iter", "six"), "train.image.max_iter: 'six' is not of type 'integer'"),
    (("train", "image", "max_iter", -5), "train.image.max_iter: -5 is less than the minimum of 1"),
    (("train", "image", "lrr", 1), "train.image: unknown key 'lrr'"),
    (("dataset", "train", "image", "flip_p", 1.5), "dataset.train.image.flip_p: 1.5 is greater than the maximum"),
    (("test", "image", "quantise_masks", "yes"), "test.image.quantise_masks: 'yes' is not of type 'boolean'"),
])
def test_a_bad_value_is_one_line_naming_the_key_and_file(tmp_path, edit, needle):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    node = params
    for key in edit[:-2]:
        node = node[key]
    node[edit[-2]] = edit[-1]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value) and "\n" not in str(err.value)
    res = subprocess.run([sys.executable, "-m", "maggie.stages.report", "--params", str(path)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and needle in res.stderr


def test_preset_names_are_files_of_presets_only(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    for bad in ("../params", "/etc/passwd", "missing"):
        with pytest.raises(ParamsError):
            apply_preset(bad, tmp_path / "params.yaml", REPO / "presets")


def test_exponent_floats_are_numbers_as_dvc_writes_them(tmp_path):
    # `dvc exp run -S train.image.lr=5e-5` and ruamel write "5e-05", which plain PyYAML (YAML 1.1) reads as a string
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("train:"))
    at = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("lr:"))
    lines[at] = "    lr: 5e-05\n"
    path = tmp_path / "params.yaml"
    path.write_text("".join(lines))
    assert isinstance(yaml.safe_load(path.read_text())["train"]["image"]["lr"], str)   # what PyYAML alone gives
    params = load_params(path)
    assert params["train"]["image"]["lr"] == 5e-05
    assert load_params(REPO / "params.yaml")["model"] == yaml.safe_load(text)["model"]  # nothing else read otherwise
