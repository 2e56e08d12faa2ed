"""The video network equals the authors' code on clips of 3, 4, 5 and 8 frames, fused matte included.

``fixtures/video_clips/video_clips.npz`` holds the outputs of the authors' ``MaGGIe_Temp`` on clips
rebuilt here from the shared parity case (``fixtures/video_clips/make_fixture.py`` made them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model_parity import assert_parity, weights

from maggie.models import load_model

HERE = Path(__file__).parent / "fixtures" / "video_clips"
spec = importlib.util.spec_from_file_location("video_clips_fixture", HERE / "make_fixture.py")
fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture)


@pytest.fixture(scope="module")
def outputs():
    return np.load(HERE / "video_clips.npz")


@pytest.mark.parametrize("mode", ["sparse", "tiles", "rulebook", "dense"])
@pytest.mark.parametrize("name,frames,people", fixture.CASES)
def test_video_clip_parity(parity_dir, outputs, mode, name, frames, people):
    model = load_model(weights(parity_dir, True), refine_mode=mode)
    image, mask = fixture.clip(parity_dir, frames, people)
    with torch.no_grad():
        out = model(torch.from_numpy(image), torch.from_numpy(mask))
    assert_parity(out["alpha"], outputs[f"{name}_out_refined_masks"], f"{name} alpha")
    if f"{name}_out_alpha_os1" in outputs:
        assert_parity(out["alpha_os1"], outputs[f"{name}_out_alpha_os1"], f"{name} alpha_os1")
