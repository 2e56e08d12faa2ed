"""MGM, MGM* and MGM+TCVOM: parity with the authors' code (../shared/parity/baselines), checkpoints, fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity_report import baseline_weights
from safetensors.torch import load_file
from test_model_parity import assert_parity

from maggie.models import MGM, TCVOM, MGMConfig, build_model, detect_arch, load_model, save_weights
from maggie.models.baselines.mgm import progressive_fuse
from maggie.models.baselines.tcvom import FeatureAggregation
from maggie.models.baselines.tcvom import attention_loss as tcvom_attention_loss

CASES = {"mgm": "mgm_3inst", "mgm_stacked": "mgm_stacked_3inst"}


def reference_weights(parity_dir, arch: str) -> dict[str, torch.Tensor]:
    return baseline_weights(parity_dir, arch, load_file(str(parity_dir / "maggie_image_weights.safetensors")))


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


def test_mgm_tcvom_parity(parity_dir):
    sd = reference_weights(parity_dir, "mgm_tcvom")
    assert detect_arch(sd) == "mgm_tcvom"
    model = load_model(sd)
    assert isinstance(model, TCVOM) and model.is_video
    case = np.load(parity_dir / "baselines" / "mgm_tcvom_2inst_3f.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    for ours, ref in (("alpha_os8", "out_alpha_os8"), ("alpha_os4", "out_alpha_os4"), ("alpha_os1", "out_alpha_os1"),
                      ("alpha", "out_refined_masks")):
        assert_parity(out[ours], case[ref], f"mgm_tcvom {ours}")


def test_feature_aggregation_attends_only_inside_the_mask():
    torch.manual_seed(0)
    fam = FeatureAggregation(8, 3).eval()
    x, prev, nxt = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    mask = torch.zeros(1, 1, 48, 48)
    mask[..., :24, :24] = 1  # the top-left quarter of the OS8 grid
    with torch.no_grad():
        out, att_prev, _att_next, small = fam(x, prev, nxt, mask)
        value = fam.value_conv(x)
    assert small.sum() == 9
    outside = ~small[0, 0]
    torch.testing.assert_close(out[0][:, outside], value[0][:, outside])  # the reference's quirk
    assert not torch.allclose(out[0][:, ~outside], value[0][:, ~outside])
    assert (att_prev.reshape(1, 9, 6, 6)[0][:, outside] == 0).all()
    # A 1x1 window leaves one key to attend to: inside the mask the result is the frame's value
    # plus both neighbours' keys at that pixel (the keys double as values).
    one = FeatureAggregation(8, 1).eval()
    with torch.no_grad():
        out, *_ = one(x, prev, nxt, torch.ones(1, 1, 48, 48))
        expected = one.value_conv(x) + one.key_conv(prev) + one.key_conv(nxt)
    torch.testing.assert_close(out, expected)


def test_tcvom_training_freezes_early_batch_norms_and_returns_its_attention_loss():
    from maggie.models import DecoderState

    model = TCVOM(MGMConfig(arch="mgm_stacked_tcvom")).train()
    assert not model.decoder.layer1.training and not model.decoder.layer2.training
    assert model.decoder.layer3.training and model.encoder.training
    x = torch.randn(1, 3, 3, 64, 64)
    masks = torch.zeros(1, 3, 10, 64, 64)
    masks[:, :, 0, 16:48, 16:40] = 1
    gt = masks.clone()
    gt[:, :, 0, 16:48, 38:40] = 0.5  # a soft edge so that there is something uncertain
    out = model(x, masks, state=DecoderState(iteration=1, gt_alpha=gt.flatten(0, 1)))
    assert out["alpha"].shape == (1, 3, 10, 64, 64) and {"weight_os4", "weight_os1"} <= set(out)
    assert out["loss_atten"].dim() == 0 and torch.isfinite(out["loss_atten"])


def test_tcvom_attention_loss_by_hand():
    # One middle frame, a 1x1 OS8 grid, window 1: the neighbour differs by 0.5 (> 0.3) before and
    # by 0 after, so the targets are 0 and 0.8; logits 0 give BCE log(2) for both.
    alphas = torch.zeros(1, 3, 1, 8, 8)
    alphas[:, 0] = 0.5
    logits = torch.zeros(1, 1, 1)
    small = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    loss = tcvom_attention_loss(alphas, [(logits, logits, small)], window=1)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
