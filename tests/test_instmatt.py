"""InstMatt: parity with the authors' code (tests/fixtures/instmatt), checkpoints, and what it adds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from parity_report import instmatt_case
from test_model_parity import assert_parity

from maggie.models import InstMatt, InstMattConfig, build_model, detect_arch, load_model
from maggie.models.baselines.instmatt import instmatt_loss, tri_masks, trimatte_targets
from maggie.models.baselines.instmatt_refiner import MultiInstRefiner, disagreement, duplicates, windows
from maggie.models.ops.loss_terms import pyramid_l1

FIXTURE = Path(__file__).parent / "fixtures" / "instmatt"


@pytest.fixture(scope="module")
def case(parity_dir):
    return instmatt_case(parity_dir, FIXTURE)


def test_parity_with_the_authors_inference(case):
    sd, c, _ = case
    assert detect_arch(sd) == "instmatt"
    model = load_model(sd)
    assert isinstance(model, InstMatt)
    image, mask = torch.from_numpy(c["image"]), torch.from_numpy(c["mask"])
    assert torch.equal(tri_masks(mask[0, 0]), torch.from_numpy(c["trimask"]))
    with torch.no_grad():
        out = model(image, mask)
        again = model(image, mask)
    assert_parity(out["alpha_os8"][0, 0], c["out_alpha_os8"][:, 0], "instmatt alpha_os8")
    assert_parity(out["trimatte"][0, 0], c["out_final"], "instmatt tri-mattes")
    assert_parity(out["alpha"][0, 0], c["out_final"][:, 0], "instmatt alpha")
    # The fixture's backbone is random, so its T mattes cover everything and every instance is a
    # "duplicate": the refiner leaves them all, and the output is the fused tri-matte.
    assert c["bad"].all() and np.array_equal(c["out_final"], c["out_fused"])
    assert torch.equal(out["alpha"], again["alpha"])  # no power iteration in evaluation


def test_refiner_parity(case):
    sd, c, refiner_inputs = case
    refiner = MultiInstRefiner()
    refiner.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("refiner.")})
    masks = torch.from_numpy(c["refiner_masks"]).float()
    pred, feat = refiner_inputs(masks)
    assert torch.equal(pred.half(), torch.from_numpy(c["refiner_pred"]))
    assert duplicates(pred[:, 0:1]).tolist() == c["refiner_bad"].astype(bool).tolist() == [False, False, False, True]
    boxes = windows(disagreement(pred), 96)
    np.testing.assert_allclose(boxes, c["refiner_boxes"], rtol=1e-6)
    assert len(boxes) > 1 and int(c["refiner_passes"]) == 2  # several windows, the two-pass stop
    image = torch.from_numpy(c["refiner_image"]).float().expand(4, -1, -1, -1)
    before = pred.clone()
    out = refiner.refine(image, pred, feat)
    assert torch.equal(pred, before)  # inputs are left alone
    assert_parity(out, c["refiner_out"], "instmatt refiner")
    assert torch.equal(out[3], pred[3])  # the duplicate keeps its prediction


def test_official_checkpoint_layout_loads(case, tmp_path):
    sd, _, _ = case
    shapes = json.loads((FIXTURE / "instmatt_keys.json").read_text())
    ours = build_model("instmatt").state_dict()
    assert {k: list(v.shape) for k, v in ours.items()} == shapes  # the authors' 604 keys and shapes
    # Their best_model.pth: a DDP state dict under "state_dict" (with "module." prefixes).
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "iter": 1}, tmp_path / "best_model.pth")
    model = load_model(tmp_path / "best_model.pth")
    assert isinstance(model, InstMatt)
    torch.testing.assert_close(model.refiner.head.weight, sd["refiner.head.weight"])


def test_tri_masks_and_targets_by_hand():
    m = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])[:, None]  # [2, 1, 3]: overlap in the middle
    t = tri_masks(m)
    assert t.shape == (2, 3, 1, 3)
    assert t[0, :, 0].tolist() == [[1, 1, 0], [0, 1, 1], [0, -1, 0]]  # R is a sum, B = 1 - sum (not clamped)
    a = torch.tensor([[0.6, 0.0], [0.3, 1.0]])[:, None]
    g = trimatte_targets(a)
    torch.testing.assert_close(g[0, :, 0], torch.tensor([[0.6, 0.0], [0.3, 1.0], [0.1, 0.0]]))


def test_duplicates_by_hand():
    t = torch.zeros(4, 1, 20, 20)
    t[0, :, 0:10, 0:10] = 1
    t[1, :, 0:10, 0:9] = 1  # nearly the same as 0: the later of the pair is dropped
    t[2, :, 12:20, 12:20] = 1
    t[3, :, 12:20, 0:6] = 1
    assert duplicates(t).tolist() == [False, True, False, False]
    # Overlapping two others by more than 0.3 (but not 0.5) marks an instance as well.
    u = torch.zeros(3, 1, 20, 20)
    u[0, :, :, 0:10] = 1
    u[1, :, :, 6:14] = 1
    u[2, :, :, 10:20] = 1
    assert duplicates(u).tolist() == [False, True, False]


def test_windows_centre_on_disagreement_and_stay_inside():
    d = torch.zeros(1, 1, 100, 200)
    d[..., 50, 150] = 1.0
    boxes = windows(d, 64)
    assert boxes.shape == (1, 5) and boxes[0].tolist() == [118, 18, 182, 82, 1.0]
    d = torch.zeros(1, 1, 100, 200)
    d[..., 0, 190] = 0.5  # near a corner: shifted inside, not clipped
    x1, y1, x2, y2, _ = windows(d, 64)[0]
    assert (x1, y1, x2, y2) == (136, 0, 200, 64)
    # Nothing above 0.01: the single best candidate.
    assert len(windows(torch.full((1, 1, 100, 200), 0.001), 64)) == 1


def test_exchange_is_symmetric_in_the_instances():
    torch.manual_seed(0)
    refiner = MultiInstRefiner().eval()
    image, pred, feat = torch.randn(3, 3, 40, 40), torch.rand(3, 3, 40, 40), torch.randn(3, 32, 40, 40)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = refiner.window_pass(image, pred, feat)
        out_perm = refiner.window_pass(image[perm], pred[perm], feat[perm])
        alone = refiner.window_pass(image[:1], pred[:1], feat[:1])
        # Changing another instance changes this one's output: the instances talk to each other.
        other = pred.clone()
        other[1] = 1 - other[1]
        changed = refiner.window_pass(image, other, feat)
    torch.testing.assert_close(out_perm, out[perm])
    assert alone.shape == (1, 3, 40, 40)
    assert (changed[0] - out[0]).abs().max() > 1e-4


def test_any_number_of_instances_and_frames():
    torch.manual_seed(0)
    model = InstMatt().eval()
    masks = torch.zeros(1, 2, 12, 64, 96)
    for i in range(12):
        masks[:, :, i, 5 * i:5 * i + 20, 7 * i:7 * i + 20] = 1
    with torch.no_grad():
        out = model(torch.randn(1, 2, 3, 64, 96), masks)
    assert out["alpha"].shape == (1, 2, 12, 64, 96) and out["trimatte"].shape == (1, 2, 12, 3, 64, 96)
    assert torch.isfinite(out["alpha"]).all()
    plain = InstMatt(InstMattConfig(refine=False)).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert plain(torch.randn(1, 1, 3, 64, 96), masks[:, :1, :3])["alpha"].shape == (1, 1, 3, 64, 96)


def test_training_outputs_loss_and_gradients():
    torch.manual_seed(0)
    model = InstMatt().train()
    alpha = torch.zeros(2, 1, 3, 128, 128)
    alpha[:, :, 0, 20:80, 20:60] = 1
    alpha[:, :, 1, 40:100, 50:110] = 0.7
    alpha[1, :, 2] = 0  # an empty slot: no instance, no loss
    mask = (alpha > 0.5).float()
    out = model(torch.randn(2, 1, 3, 128, 128), mask)
    iters = out["refined"].shape[0]
    assert 1 <= iters <= 3 and out["trimatte_os1"].shape == (2, 1, 3, 3, 128, 128)
    assert out["valid"].tolist() == [[[True, True, False]], [[True, True, False]]]
    assert (out["trimatte_os1"][1, 0, 2] == 0).all()
    losses = instmatt_loss(out, alpha)
    assert set(losses) == {"loss_rec", "loss_lap", "loss_sum_one", "total"}
    # The refiner's loss reaches the refiner only: its inputs are detached.
    refined_only = out["refined"][-1][out["valid"]].sum()
    refined_only.backward(retain_graph=True)
    assert model.refiner.head.weight.grad.abs().sum() > 0
    assert model.encoder.conv1.module.weight_bar.grad is None
    losses["total"].backward()
    assert model.encoder.conv1.module.weight_bar.grad.abs().sum() > 0


def test_training_refinement_returns_each_iteration():
    torch.manual_seed(0)
    refiner = MultiInstRefiner()
    pred = torch.rand(2, 3, 64, 64)
    steps = refiner.refine_train(torch.randn(2, 3, 64, 64), pred, torch.randn(2, 32, 64, 64), 3)
    assert len(steps) == 3
    # Distinct tensors (the reference appended one tensor three times), each a further step.
    assert not torch.equal(steps[0], steps[1]) and not torch.equal(steps[1], steps[2])
    # Only the window's interior, inside a 10-px margin, is rewritten.
    assert torch.equal(steps[0][..., :10, :], pred[..., :10, :])


def test_pyramid_loss_weights_levels_and_broadcasts_the_weight():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 64, 64)
    ones = torch.ones(2, 1, 64, 64)
    assert pyramid_l1(gt, gt, ones) == 0
    noisy = gt + 0.1 * torch.randn_like(gt)
    one_level = pyramid_l1(noisy, gt, ones, levels=1)
    # One level: the L1 of the band-pass residuals, summed over the 3 channels per unit of weight.
    from maggie.models.ops.loss_terms import _blur, _upsample

    def band(x):
        return x - _upsample(_blur(x)[:, :, ::2, ::2])

    expected = (band(noisy) - band(gt)).abs().sum() / ones.sum()
    torch.testing.assert_close(one_level, expected)
    assert pyramid_l1(noisy, gt, ones, levels=2) > one_level
    assert torch.isfinite(pyramid_l1(noisy[..., :20, :20], gt[..., :20, :20], ones[..., :20, :20]))  # too small for 5
