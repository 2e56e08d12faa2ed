"""The network equals the authors' code: outputs on their fixtures, within the README's tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from maggie.models import load_model

PAIRS = [("alpha", "out_refined_masks"), ("alpha_os8", "out_alpha_os8"), ("alpha_os4", "out_alpha_os4"),
         ("alpha_os1", "out_alpha_os1"), ("detail_mask", "out_detail_mask")]


def assert_parity(ours: torch.Tensor, ref: np.ndarray, name: str) -> None:
    diff = np.abs(ours.numpy() - ref)
    assert diff.mean() <= 1e-4, f"{name}: mean abs diff {diff.mean():.2e}"
    assert (diff > 1e-2).mean() <= 1e-3, f"{name}: {(diff > 1e-2).mean():.2%} of values off by > 1e-2"


def weights(parity_dir, video: bool) -> dict[str, torch.Tensor]:
    sd = load_file(str(parity_dir / "maggie_image_weights.safetensors"))
    if video:
        sd.update(load_file(str(parity_dir / "maggie_video_extra_weights.safetensors")))
    return sd


@pytest.mark.parametrize("mode", ["sparse", "tiles", "rulebook", "dense"])
def test_image_parity(parity_dir, mode):
    model = load_model(weights(parity_dir, False), refine_mode=mode)
    assert model.cfg.arch == "maggie_image"
    case = np.load(parity_dir / "image_3inst.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    for ours, ref in PAIRS:
        assert_parity(out[ours], case[ref], ours)


@pytest.mark.parametrize("mode", ["sparse", "tiles", "rulebook", "dense"])
def test_video_parity(parity_dir, mode):
    model = load_model(weights(parity_dir, True), refine_mode=mode)
    assert model.cfg.arch == "maggie_video"
    case = np.load(parity_dir / "video_2inst_3f.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    pairs = PAIRS + [("temp_alpha", "out_temp_alpha"), ("diff_forward", "out_diff_pred_forward"),
                     ("diff_backward", "out_diff_pred_backward")]
    for ours, ref in pairs:
        assert_parity(out[ours], case[ref], ours)


def test_eval_forward_is_repeatable(parity_dir):
    """Unlike the reference (whose spectral norm drifts every call), inference is a pure function."""
    model = load_model(weights(parity_dir, False))
    case = np.load(parity_dir / "image_3inst.npz")
    image, mask = torch.from_numpy(case["image"]), torch.from_numpy(case["mask"])
    with torch.no_grad():
        a = model(image, mask)["alpha"]
        b = model(image, mask)["alpha"]
    assert torch.equal(a, b)


def test_float16_weights_load_as_float32(parity_dir):
    sd = weights(parity_dir, False)
    assert sd["aspp.aspp1.weight"].dtype == torch.float16
    model = load_model(sd)
    assert model.aspp.aspp1.weight.dtype == torch.float32
    assert model.encoder.bn1.num_batches_tracked.dtype == torch.int64
