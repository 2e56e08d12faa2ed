"""MGM baselines: parity with the authors' code on ../shared/parity/baselines, checkpoint I/O, fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_model_parity import assert_parity

from maggie.models import MGM, MGMConfig, build_model, detect_arch, load_model, save_weights
from maggie.models.mgm import progressive_fuse

CASES = {"mgm": "mgm_3inst", "mgm_stacked": "mgm_stacked_3inst"}


def reference_weights(parity_dir, arch: str) -> dict[str, torch.Tensor]:
    """The baseline's state dict: its own tensors, the rest shared with the MaGGIe fixture (README there)."""
    keys = json.loads((parity_dir / "baselines" / f"{arch}_keys.json").read_text())
    own = load_file(str(parity_dir / "baselines" / f"{arch}_own_weights.safetensors"))
    shared = load_file(str(parity_dir / "maggie_image_weights.safetensors"))
    return {k: own[k] if k in own else shared[k] for k in keys}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_mgm_parity(parity_dir, arch):
    sd = reference_weights(parity_dir, arch)
    assert detect_arch(sd) == arch
    model = load_model(sd)
    assert isinstance(model, MGM) and model.cfg.arch == arch
    case = np.load(parity_dir / "baselines" / f"{CASES[arch]}.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    for ours, ref in (("alpha_os8", "out_alpha_os8"), ("alpha_os4", "out_alpha_os4"), ("alpha_os1", "out_alpha_os1"),
                      ("alpha", "out_refined_masks")):
        assert_parity(out[ours], case[ref], f"{arch} {ours}")
    # Eval forwards restore the spectral-norm state, so a second call gives the same mattes.
    with torch.no_grad():
        again = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    assert torch.equal(out["alpha"], again["alpha"])


def test_saved_baseline_reloads_with_its_arch(tmp_path):
    torch.manual_seed(0)
    model = build_model("mgm_stacked").eval()
    save_weights(model, tmp_path / "mgm_stacked.safetensors")
    loaded = load_model(tmp_path / "mgm_stacked.safetensors")
    assert isinstance(loaded, MGM) and loaded.cfg.arch == "mgm_stacked"
    x, m = torch.randn(1, 1, 3, 64, 64), (torch.rand(1, 1, 2, 64, 64) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model(x, m)["alpha"], loaded(x, m)["alpha"])


def test_any_number_of_instances():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 3, 64, 64)
    masks = (torch.rand(1, 1, 12, 64, 64) > 0.5).float()
    for arch in ("mgm", "mgm_stacked"):
        model = MGM(MGMConfig(arch=arch)).eval()
        with torch.no_grad():
            out = model(x, masks)
        assert out["alpha"].shape == (1, 1, 12, 64, 64)
    # MGM* pads a group of fewer than 10 with empty slots: the first 10 instances alone give the
    # same mattes as in the 12-instance call, whose second group holds the other two.
    with torch.no_grad():
        first = model(x, masks[:, :, :10])["alpha"]
    torch.testing.assert_close(first, out["alpha"][:, :, :10])


def test_progressive_fusion_by_hand():
    shape = (1, 1, 40, 40)
    os8 = torch.zeros(shape)
    os8[..., 20, 20] = 0.5  # one uncertain OS8 pixel
    out = {"alpha_os8": os8, "alpha_os4": torch.full(shape, 0.25), "alpha_os1": torch.full(shape, 0.75)}
    alpha, w4, w1 = progressive_fuse(out)
    # OS4 takes over in a 15x15 ellipse around it; all of that is uncertain (0.25), so OS1 takes over
    # in that region dilated by a 7x7 ellipse; far away OS8 stays.
    assert w4[..., 20, 20] == 1 and w4[..., 20, 27] == 1 and w4[..., 20, 28] == 0
    assert alpha[..., 20, 27] == 0.75 and w1[..., 20, 30] == 1 and alpha[..., 0, 0] == 0
    assert set(alpha.unique().tolist()) == {0.0, 0.75}


def test_training_mode_outputs_loss_regions():
    model = MGM(MGMConfig(arch="mgm")).train()
    x, m = torch.randn(2, 1, 3, 64, 64), (torch.rand(2, 1, 1, 64, 64) > 0.5).float()
    out = model(x, m)
    assert {"weight_os4", "weight_os1", "alpha_os8", "alpha"} <= set(out)
    with pytest.raises(ValueError, match="trains on 1 mask slot"):
        model(x, torch.cat([m, m], dim=2))
