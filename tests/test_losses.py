"""Loss terms on cases whose values can be computed by hand, and the training-time behaviours."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from maggie.config.params import LossWeights
from maggie.models import DecoderState, MaGGIe, MaggieConfig
from maggie.models.maggie.imd import attention_loss
from maggie.models.maggie.objective import training_loss
from maggie.models.ops.loss_terms import (
    dtssd_loss,
    gradient_loss,
    laplacian_loss,
    os8_weights,
    temporal_sparsity_loss,
    weighted_l1,
)


def loss_weights(**given) -> LossWeights:
    """Every term off but those given (LossWeights has no defaults: params.yaml is their one source)."""
    names = [f.name for f in dataclasses.fields(LossWeights)]
    return LossWeights(**{n: given.get(n, False if n in ("loss_reweight_os8", "loss_after_sum_rule") else 0.0)
                          for n in names})


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_weighted_l1_by_hand():
    p, g = t([[0.5, 1.0], [0.0, 0.2]]), t([[0.0, 1.0], [0.0, 0.0]])
    w = t([[1.0, 1.0], [0.0, 2.0]])
    # (1*0.5 + 1*0 + 0 + 2*0.2) / (1 + 1 + 0 + 2) = 0.9 / 4
    assert weighted_l1(p, g, w).item() == pytest.approx(0.225)


def test_os8_weights_by_hand():
    g = torch.zeros(1, 2, 2, 2)
    g[0, 0] = t([[1.0, 0.5], [0.0, 0.0]])[0, 0]
    a8 = torch.zeros(1, 2, 2, 2)
    a8[0, 0, 1, 1] = 0.3
    w = os8_weights(g, a8, reweight=True)
    # slot 0 holds an instance: 1 everywhere, +1 where gt (0.5) or prediction (0.3) is fractional
    assert w[0, 0].tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert w[0, 1].abs().sum() == 0  # empty slot
    assert os8_weights(g, a8, reweight=False)[0, 0].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_laplacian_of_constant_is_zero_and_of_step_positive():
    c = torch.full((1, 1, 16, 16), 0.4)
    w = torch.ones_like(c)
    assert laplacian_loss(c, torch.full_like(c, 0.4), w).item() == pytest.approx(0.0, abs=1e-7)
    # A constant offset between prediction and truth lives only in the coarsest residual
    # *difference*: each level's band-pass of a constant is 0, so the loss is 0 too.
    assert laplacian_loss(c, torch.full_like(c, 0.9), w).item() == pytest.approx(0.0, abs=1e-6)
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    assert laplacian_loss(step, torch.zeros_like(step), w).item() > 0


def test_gradient_loss_zero_for_equal_and_by_hand_for_a_ramp():
    ramp = torch.arange(5, dtype=torch.float32).repeat(5, 1)[None, None] / 4
    w = torch.ones_like(ramp)
    assert gradient_loss(ramp, ramp, w).item() == pytest.approx(0.0, abs=1e-6)
    # Interior of a ramp with slope 1/4: Sobel/8 gives gx = 0.25; at the replicate-padded left
    # and right columns gx = 0.125.  Against a flat truth (gradient 0, magnitude sqrt(eps)):
    flat = torch.zeros_like(ramp)
    eps = 1e-6
    per_col = [0.125, 0.25, 0.25, 0.25, 0.125]
    expected = sum(5 * (((g * g + eps) ** 0.5) - eps ** 0.5) for g in per_col) / 25
    assert gradient_loss(ramp, flat, w).item() == pytest.approx(expected, rel=1e-5)


def test_dtssd_loss_by_hand():
    pred = torch.tensor([0.0, 0.5]).reshape(1, 2, 1, 1, 1)
    gt = torch.zeros_like(pred)
    w = torch.ones_like(pred)
    # ((0.5 - 0) - 0)^2 / (1 + 1e-6)
    assert dtssd_loss(pred, gt, w).item() == pytest.approx(0.25 / (1 + 1e-6))


def test_temporal_sparsity_loss_by_hand():
    zero_logits = torch.zeros(1, 3, 1, 1, 1)
    trans = torch.ones(1, 3, 1, 1, 1)
    # BCE(0 logit, 1) = ln 2 twice; dtSSD(sigmoid(0)=0.5 constant vs 1 constant) = 0 (no change)
    value = temporal_sparsity_loss(zero_logits, zero_logits, trans).item()
    assert value == pytest.approx(0.25 * 2 * 0.6931472, rel=1e-5)


def test_attention_loss_by_hand():
    # one batch item, 2 tokens, 4 pixels; token 0's region is pixels {0, 1}, token 1 is empty.
    attn = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]])
    guide = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    # token 0: 1 - 0.5; token 1: 0 - 0; over 2 identical maps averaged, normalised by B*T = 1
    assert attention_loss([attn, attn], guide, 1).item() == pytest.approx(0.5)


def test_objective_combines_terms_with_their_weights():
    torch.manual_seed(0)
    b, tt, n, h, w = 1, 1, 2, 16, 16
    gt = torch.rand(b, tt, n, h, w)
    out = {k: torch.rand(b, tt, n, h, w) for k in ("alpha_os8", "alpha_os4", "alpha_os1")}
    out.update(weight_os4=torch.ones(b, tt, n, h, w), weight_os1=torch.ones(b, tt, n, h, w),
               detail_mask=torch.ones(b, tt, n, h, w), loss_atten=torch.tensor(0.3))
    weights = loss_weights(loss_alpha_w=1.0, loss_alpha_grad_w=0.05, loss_alpha_lap_w=0.05, loss_atten_w=5.0,
                           loss_reweight_os8=True, loss_temp_w=1.0)
    terms = training_loss(out, {"alpha": gt, "mask": (gt > 0.5).float()}, weights)
    total = terms["loss_rec"] + 0.05 * terms["loss_lap"] + 0.05 * terms["loss_grad"] + 5.0 * terms["loss_atten"]
    assert terms["total"].item() == pytest.approx(total.item(), rel=1e-6)



def test_excess_sum_is_zero_on_composited_people_and_counts_double_claims():
    """People composited front over back add up to at most 1; two mattes claiming a pixel fully cost 1 there."""
    from maggie.models.ops.loss_terms import excess_sum_loss

    torch.manual_seed(0)
    front, back = torch.rand(2, 8, 8), torch.rand(2, 8, 8)
    visible = torch.stack([front, back * (1 - front)], 1)  # [M=2, N=2, H, W], what the synthesis writes
    assert excess_sum_loss(visible).item() == 0.0
    claimed = torch.zeros(1, 3, 4, 4)
    claimed[0, 0] = 1.0
    claimed[0, 1, :2] = 1.0  # a second person on the top half, a third nowhere
    assert excess_sum_loss(claimed).item() == pytest.approx(0.5)
    gt = visible[None]  # [B=1, T=2, N=2, H, W]
    out = {"alpha_os8": claimed.new_ones(1, 2, 2, 8, 8), "alpha_os4": gt, "alpha_os1": gt,
           "weight_os4": torch.ones_like(gt), "weight_os1": torch.ones_like(gt)}
    weights = loss_weights(loss_alpha_w=1.0, loss_sum_one_w=2.0)
    terms = training_loss(out, {"alpha": gt, "mask": (gt > 0.5).float()}, weights)
    # OS1 and OS4 are the truth (no excess); OS8 says both people are everywhere: excess 1 at every pixel.
    assert terms["loss_sum_one"].item() == pytest.approx(1.0)
    assert terms["total"].item() == pytest.approx((terms["loss_rec"] + 2.0 * terms["loss_sum_one"]).item())

def test_warmup_uses_true_alpha_to_guide_the_detail_branch():
    """Before warmup_detail_iter the detail region D comes from the true alpha, after it from OS8."""
    torch.manual_seed(0)
    random.seed(0)
    model = MaGGIe(MaggieConfig(warmup_detail_iter=10)).train()
    image = torch.randn(2, 1, 3, 64, 64)  # batch >= 2: BatchNorm after ASPP's global pooling
    mask = torch.zeros(2, 1, 10, 64, 64)
    mask[:, 0, 3, 16:48, 16:48] = 1
    gt = torch.zeros(2, 10, 64, 64)
    gt[:, 3, 20:40, 20:40] = 0.5  # fractional square: D is its dilated area
    early = model(image, mask, state=DecoderState(iteration=1, gt_alpha=gt))["detail_mask"][0, 0, 3]
    from maggie.models.ops.morphology import compute_unknown

    assert torch.equal(early, compute_unknown(gt, 30)[0, 3])
    late = model(image, mask, state=DecoderState(iteration=1000, gt_alpha=gt))["detail_mask"][0, 0, 3]
    assert not torch.equal(late, early)


def test_random_slots_and_empty_slot_outputs():
    """Instances may sit in any of the 10 ID slots; empty slots produce zero mattes in training."""
    torch.manual_seed(1)
    model = MaGGIe(MaggieConfig()).train()
    mask = torch.zeros(2, 1, 10, 64, 64)
    mask[:, 0, 7, 8:40, 8:40] = 1
    out = model(torch.randn(2, 1, 3, 64, 64), mask, state=DecoderState(iteration=5000, gt_alpha=mask.flatten(0, 1)))
    assert out["alpha_os8"][0, 0, [0, 1, 2, 3, 4, 5, 6, 8, 9]].abs().sum() == 0
    assert out["alpha_os8"][0, 0, 7].abs().sum() > 0


def test_other_people_marks_a_persons_pixels_of_the_others_only():
    """A person's 'other people' region is where someone else is (alpha > 0.5) and this person is not."""
    from maggie.models.ops.loss_terms import other_people

    gt = torch.zeros(1, 3, 4, 4)
    gt[0, 0, :2] = 1.0          # person 0: top half
    gt[0, 1, 1:3] = 0.8         # person 1: rows 1-2, behind person 0 on row 1
    gt[0, 1, 1] = 0.0
    gt[0, 2, 3, 0] = 0.3        # person 2: one soft pixel, too faint to count as anyone's place
    occ = other_people(gt)
    assert occ[0, 0].tolist() == [[0.0] * 4, [0.0] * 4, [1.0] * 4, [0.0] * 4]
    assert occ[0, 1].tolist() == [[1.0] * 4, [1.0] * 4, [0.0] * 4, [0.0] * 4]
    assert occ[0, 2].tolist() == [[1.0] * 4, [1.0] * 4, [1.0] * 4, [0.0] * 4]
    assert other_people(gt[:, :1]).sum().item() == 0.0


def test_occlusion_weight_raises_the_cost_of_a_matte_on_other_people():
    """With loss_occlusion_w, alpha put on another person costs more than the same error elsewhere."""
    gt = torch.zeros(1, 1, 2, 8, 8)
    gt[0, 0, 0, :, :4] = 1.0    # person 0 on the left, person 1 on the right
    gt[0, 0, 1, :, 4:] = 1.0
    spill, stray = gt.clone(), gt.clone()
    spill[0, 0, 0, :2, 4:] = 1.0   # person 0's matte on 8 pixels of person 1
    stray[0, 0, 0, :2, :4] = 0.0   # the same amount of error inside person 0
    def rec(pred, k):
        out = {"alpha_os8": pred, "alpha_os4": pred, "alpha_os1": pred,
               "weight_os4": torch.ones_like(gt), "weight_os1": torch.ones_like(gt)}
        w = loss_weights(loss_alpha_w=1.0, loss_occlusion_w=k)
        return training_loss(out, {"alpha": gt, "mask": gt}, w)["loss_rec"].item()
    assert rec(spill, 0.0) == pytest.approx(rec(stray, 0.0))
    assert rec(spill, 4.0) > 2 * rec(stray, 4.0)


def test_people_meeting_marks_the_band_where_two_people_meet_only():
    from maggie.models.ops.loss_terms import people_meeting
    gt = torch.zeros(1, 3, 12, 24)
    gt[0, 0, :, :10] = 1.0      # person 0 on the left, person 1 beside it from column 10
    gt[0, 1, :, 10:16] = 1.0
    gt[0, 2, 4:8, 21:24] = 0.4  # person 2: too faint to count as anyone's place
    meet = people_meeting(gt, radius=2)
    assert meet[0, 0, :, 8:12].eq(1).all() and meet[0, 0, :, :8].eq(0).all() and meet[0, 0, :, 12:].eq(0).all()
    assert torch.equal(meet[0, 0], meet[0, 1]), "the band is the same for both sides of the meeting"
    assert meet[0, 2].sum() == 0
    assert people_meeting(gt[:, :1]).sum() == 0


def test_meeting_weight_raises_the_cost_of_an_error_where_people_meet():
    gt = torch.zeros(1, 1, 2, 16, 16)
    gt[0, 0, 0, :, :8] = 1.0
    gt[0, 0, 1, :, 8:] = 1.0
    edge, far = gt.clone(), gt.clone()
    edge[0, 0, 0, :4, 7] = 0.0   # person 0's matte too low on 4 pixels where it meets person 1
    far[0, 0, 0, :4, 0] = 0.0    # the same error at its edge against the frame's border
    def rec(pred, k):
        out = {"alpha_os8": pred, "alpha_os4": pred, "alpha_os1": pred,
               "weight_os4": torch.ones_like(gt), "weight_os1": torch.ones_like(gt)}
        w = loss_weights(loss_alpha_w=1.0, loss_meeting_w=k)
        return training_loss(out, {"alpha": gt, "mask": gt}, w)["loss_rec"].item()
    assert rec(edge, 0.0) == pytest.approx(rec(far, 0.0))
    assert rec(edge, 4.0) > 2 * rec(far, 4.0)


def test_meeting_sum_term_sees_two_people_both_too_low_where_they_meet():
    """Where two people meet, their mattes must add up to the truth's total: both too low there costs,
    the same total split differently does not, and an edge against the background is not its business."""
    from maggie.models.ops.loss_terms import meeting_sum_loss, people_meeting
    gt = torch.zeros(1, 2, 16, 16)
    gt[0, 0, :, :8] = 1.0
    gt[0, 1, :, 8:12] = 1.0
    band = people_meeting(gt).amax(1)
    both_low, swapped, background = gt.clone(), gt.clone(), gt.clone()
    both_low[0, 0, :, 7], both_low[0, 1, :, 8] = 0.5, 0.5        # both soft at the meeting: total 1.5 of 2
    swapped[0, 0, :, 7], swapped[0, 1, :, 7] = 0.4, 0.6         # person 1 over person 0's edge: total unchanged
    background[0, 1, :, 11] = 0.3                               # person 1 too low against the background
    assert meeting_sum_loss(gt, gt, band) == 0
    assert meeting_sum_loss(both_low, gt, band) > 0.1
    assert meeting_sum_loss(swapped, gt, band) == pytest.approx(0.0, abs=1e-6)
    assert meeting_sum_loss(background, gt, band) == 0
    w = loss_weights(loss_alpha_w=1.0, loss_meeting_sum_w=1.0)
    pred = both_low[:, None]
    out = {"alpha_os8": pred, "alpha_os4": pred, "alpha_os1": pred,
           "weight_os4": torch.ones_like(pred), "weight_os1": torch.ones_like(pred)}
    terms = training_loss(out, {"alpha": gt[:, None], "mask": gt[:, None]}, w)
    assert terms["loss_meeting_sum"] == pytest.approx(4 * meeting_sum_loss(both_low, gt, band).item())


def test_losses_after_the_sum_rule_score_the_mattes_as_evaluated():
    """With loss_after_sum_rule, a person's spill onto a pixel that only another's guidance covers is cut by
    the guided rule before the loss, as at evaluation: it costs nothing, and the guided person's matte
    still gets its gradient."""
    gt = torch.zeros(1, 1, 2, 8, 8)
    gt[0, 0, 0, :, :4] = 1.0
    gt[0, 0, 1, :, 4:] = 1.0
    spill = gt.clone()
    spill[0, 0, 0, :, 4:] = 1.0      # person 0 claims all of person 1
    spill[0, 0, 1, :2, 4:] = 0.5     # and person 1 is too low on 8 pixels
    spill.requires_grad_(True)

    def rec(after: bool) -> torch.Tensor:
        out = {"alpha_os8": spill, "alpha_os4": spill, "alpha_os1": spill,
               "weight_os4": torch.ones_like(gt), "weight_os1": torch.ones_like(gt)}
        return training_loss(out, {"alpha": gt, "mask": gt}, loss_weights(loss_alpha_w=1.0,
                                                                           loss_after_sum_rule=after))["loss_rec"]
    before, after = rec(False), rec(True)
    assert after < before
    # after the rule, where person 1 is too low on 8 pixels (0.5), person 0 keeps the room it leaves (0.5);
    # elsewhere its spill is gone: 2 x 8 x 0.5 over 2 x 64 weighted pixels, x (2 + 1 + 1)
    assert after.item() == pytest.approx(4 * 2 * 8 * 0.5 / 128, rel=1e-5)
    after.backward()
    assert spill.grad[0, 0, 1, :2, 4:].lt(0).all(), "the guided person is still pushed up where it is too low"
