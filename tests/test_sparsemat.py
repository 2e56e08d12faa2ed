"""SparseMat: parity with the authors' code, spconv semantics of the sparse layers, clip inference, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_baseline_parity import reference_weights
from test_model_parity import assert_parity

from maggie.models import build_model, detect_arch, load_model, save_weights
from maggie.models.baselines.sparsemat import SparseMat, sparsemat_loss
from maggie.models.baselines.sparsemat_shm import SiteConv
from maggie.models.ops.sparse_conv import downsample_sites


def test_sparsemat_parity(parity_dir):
    sd = reference_weights(parity_dir, "sparsemat")
    assert detect_arch(sd) == "sparsemat"
    model = load_model(sd)
    assert isinstance(model, SparseMat)
    case = np.load(parity_dir / "baselines" / "sparsemat_2inst.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
    assert_parity(out["alpha"], case["out_refined_masks"], "sparsemat alpha")


def _naive(conv: SiteConv, x: torch.Tensor, active_in: torch.Tensor, active_out: torch.Tensor) -> torch.Tensor:
    """spconv's rulebook written out site by site (batch 1)."""
    w, k, d = conv.weight.detach(), conv.kernel, conv.dilation
    h_out, w_out = active_out.shape[-2:]
    out = torch.zeros(1, w.shape[0], h_out, w_out)
    sites_in = [tuple(p) for p in torch.nonzero(active_in[0]).tolist()]
    for oy, ox in torch.nonzero(active_out[0]).tolist():
        acc = torch.zeros(w.shape[0])
        for ky in range(k):
            for kx in range(k):
                if conv.kind == "subm":
                    iy, ix = oy + d * (ky - k // 2), ox + d * (kx - k // 2)
                    pairs = [(iy, ix)]
                elif conv.kind == "strided":
                    pairs = [(2 * oy - 1 + ky, 2 * ox - 1 + kx)]
                else:  # inverse: coarse site c feeds fine site o when o = 2c - 1 + k
                    cy, cx = oy + 1 - ky, ox + 1 - kx
                    pairs = [(cy // 2, cx // 2)] if cy % 2 == 0 and cx % 2 == 0 else []
                for iy, ix in pairs:
                    if (iy, ix) in sites_in:
                        acc += w[:, ky, kx] @ x[0, :, iy, ix]
        if conv.bias is not None:
            acc += conv.bias.detach()
        out[0, :, oy, ox] = acc
    return out


@pytest.mark.parametrize("kind,dilation", [("subm", 1), ("subm", 2), ("strided", 1), ("inverse", 1)])
def test_site_convolutions_follow_the_rulebook(kind, dilation):
    torch.manual_seed(0)
    fine = torch.rand(1, 9, 11) > 0.6  # odd sizes on purpose
    coarse = downsample_sites(fine)
    active_in, active_out = {"subm": (fine, fine), "strided": (fine, coarse), "inverse": (coarse, fine)}[kind]
    conv = SiteConv(3, 2, 3, kind=kind, dilation=dilation, bias=True)
    x = torch.randn(1, 3, *active_in.shape[-2:]) * active_in[:, None]
    with torch.no_grad():
        ours = conv(x, active_out)
    torch.testing.assert_close(ours, _naive(conv, x, active_in, active_out), atol=1e-5, rtol=1e-5)


def test_one_by_one_kernels_use_spconvs_reshaped_matrix():
    conv = SiteConv(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(6.0).reshape(2, 1, 1, 3))
    x = torch.tensor([1.0, 2.0, 3.0])[None, :, None, None]
    out = conv(x, torch.ones(1, 1, 1, dtype=torch.bool))
    # spconv multiplies by weight.view(in=3, out=2) = [[0, 1], [2, 3], [4, 5]]
    assert out.flatten().tolist() == [16.0, 22.0]


def test_still_frames_copy_the_previous_output():
    torch.manual_seed(0)
    model = build_model("sparsemat").eval()
    frame = torch.randn(1, 1, 3, 64, 96)
    mask = torch.zeros(1, 1, 2, 64, 96)
    mask[..., 0, 10:50, 20:60] = 1
    mask[..., 1, 5:40, 50:90] = 1
    with torch.no_grad():
        single = model(frame, mask)["alpha"]
        clip = model(frame.expand(1, 3, 3, 64, 96).contiguous(), mask.expand(1, 3, 2, 64, 96).contiguous())["alpha"]
        # A frame that changed everywhere is refined afresh from its own low-resolution matte.
        moved = torch.cat([frame, frame + 1.0], dim=1)
        moving = model(moved, mask.expand(1, 2, 2, 64, 96).contiguous())["alpha"]
        alone = model(frame + 1.0, mask)["alpha"]
    assert clip.shape == (1, 3, 2, 64, 96)
    for t in range(3):
        torch.testing.assert_close(clip[:, t], single[:, 0])
    torch.testing.assert_close(moving[:, 1], alone[:, 0])


def test_instances_are_independent_and_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("sparsemat").eval()
    x = torch.randn(1, 1, 3, 64, 64)
    masks = (torch.rand(1, 1, 3, 64, 64) > 0.5).float()
    with torch.no_grad():
        together = model(x, masks)["alpha"]
        second = model(x, masks[:, :, 1:2])["alpha"]
    torch.testing.assert_close(together[:, :, 1:2], second)
    save_weights(model, tmp_path / "sm.safetensors")
    loaded = load_model(tmp_path / "sm.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x, masks)["alpha"], together)


def test_training_pass_and_loss():
    torch.manual_seed(0)
    model = build_model("sparsemat").train()
    x = torch.randn(2, 1, 3, 64, 64)
    gt = torch.zeros(2, 1, 1, 64, 64)
    gt[..., 16:48, 16:48] = 1.0
    gt[..., 16:48, 46:48] = 0.5
    out = model(x, (gt > 0.5).float())
    assert out["refinements"].shape == (4, 2, 1, 1, 64, 64)
    # Outside the refined region every refinement is the low-resolution matte.
    outside = out["region"] == 0
    for pred in out["refinements"]:
        assert torch.equal(pred[outside], out["alpha_lr"][outside])
    losses = sparsemat_loss(out, gt)
    assert set(losses) == {"loss_rec", "loss_lap", "loss_grad", "total"}
    losses["total"].backward()
    assert model.shm.decoder.conv_up4_alpha[0].weight.grad is not None
    assert model.lpn.backbone.model.features[0][0].weight.grad.abs().sum() > 0
    # By hand: equal refinements p give L1 (2 + 1 + 0.5 + 0.25) * |p - gt|.
    flat = {"refinements": torch.full((4, 1, 1, 1, 32, 32), 0.25)}
    by_hand = sparsemat_loss(flat, torch.zeros(1, 1, 1, 32, 32), w_lap=0.0, w_grad=0.0)
    assert float(by_hand["total"]) == pytest.approx(3.75 * 0.25)
    with pytest.raises(ValueError, match="trains on 1 mask slot"):
        model(x, torch.zeros(2, 1, 2, 64, 64))
