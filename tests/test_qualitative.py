"""Qualitative sets (masks, no alpha): previews, stability figures, the report section, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import params_with

from maggie.evaluation.qualitative import frame_change, run
from maggie.evaluation.report import qualitative_section
from maggie.files import write_image
from maggie.models import MaGGIe, MaggieConfig, save_weights
from maggie.stages.qualitative import main


def test_frame_change_by_hand():
    stack = np.zeros((3, 2, 4, 4), np.float32)
    stack[1, 0, :2] = 1.0      # person 0: 8 of 16 pixels switch on, then stay
    stack[2, 0, :2] = 1.0
    stack[2, 1] = 0.5          # person 1: everything to 0.5 at t=2
    change = frame_change(stack)
    assert change.shape == (2, 2)
    np.testing.assert_allclose(change, [[0.5, 0.0], [0.0, 0.5]])


def make_folder(root: Path, frames: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for t in range(frames):
        write_image(root / "fgr" / "clip" / f"{t:05d}.jpg", rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        for k, x in enumerate((10 + 2 * t, 60)):
            mask = np.zeros((64, 96), np.uint8)
            mask[8:56, x:x + 20] = 255
            write_image(root / "masks" / "clip" / f"{t:05d}" / f"{k:02d}.png", mask)
    write_image(root / "images" / "photo.jpg", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 20:40] = 255
    write_image(root / "masks" / "photo" / "00.png", mask)
    return root


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for stage in ("image", "video"):
        model = MaGGIe(MaggieConfig(arch=f"maggie_{stage}")).eval()
        save_weights(model, tmp_path / "models" / stage / "best.safetensors")
    qualitative = {"dir": str(make_folder(tmp_path / "pexels")), "mask_dir": "masks", "limit": None,
                   "short_size": None, "out_dir": "eval/qualitative"}
    params = params_with({"train": {"image": {"out_dir": "models/image"}, "video": {"out_dir": "models/video"}},
                          "test": {"short_size": 64, "qualitative": qualitative}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_qualitative_run_writes_previews_stability_and_report(project):
    summary = run("params.yaml", device="cpu")
    out = project / "eval" / "qualitative"
    assert json.loads((out / "summary.json").read_text()) == summary
    row = summary["videos"]["clip"]
    assert row["frames"] == 4 and row["instances"] == 2
    # Person 0's mask moves 2 px right per frame (2 columns of 48 px on, 2 off), person 1's stands still.
    assert row["mask_change_mean"] == pytest.approx([2 * 2 * 48 / (64 * 96), 0.0], abs=1e-6)
    assert len(row["matte_change_mean"]) == 2 and all(v >= 0 for v in row["matte_change_mean"])
    assert summary["images"] == {"photo": {"instances": 1}}
    for name in ("clip_preview.png", "clip_stability.png", "images_preview.png"):
        assert (out / name).stat().st_size > 1000, name
    md = qualitative_section(out, project / "reports")
    assert "| clip | 4 | 0 |" in md and "![clip_stability](qualitative/clip_stability.png)" in md
    assert (project / "reports" / "qualitative" / "clip_stability.png").is_file()


def test_bad_qualitative_folder_is_a_one_line_error(project, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["test"]["qualitative"]["dir"] = str(project / "absent")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["--params", "params.yaml", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent" in err[0] and "not a folder" in err[0]
    params["test"]["qualitative"]["dir"] = str(project / "pexels")
    params["test"]["qualitative"]["mask_dir"] = "tracker"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["--params", "params.yaml", "--device", "cpu"]) == 2
    assert "no guidance masks" in capsys.readouterr().err
