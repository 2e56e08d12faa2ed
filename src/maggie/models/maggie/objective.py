"""The training objective: the reference's loss terms combined with its weights.

L = w_alpha * L_rec + w_lap * L_lap + w_grad * L_grad + w_dt * L_dtSSD + w_att * L_att [+ w_temp * L_temp]
[+ w_sum_one * L_sum_one, not in the reference: the instances' mattes add up to at most 1];
[w_occlusion, not in the reference: the region-weighted terms weigh a person's pixels of other people
 1 + w_occlusion more];
[w_meeting, not in the reference: they weigh the band where two people meet w_meeting more];
[+ w_meeting_sum * L_meeting_sum, not in the reference: there the mattes add up to the true alphas' total];
[after_sum_rule, not in the reference: every term scores the mattes after the guided sum rule, as evaluated];
each of L_rec, L_lap, L_grad, L_dtSSD, L_sum_one summed over the three strides with weights 2:1:1
(OS1:OS4:OS8).  OS8 is weighted over the whole image (x2 where the true or predicted
alpha is uncertain); OS4/OS1 inside their refinement bands (75% of the time) or the
whole detail region D (25%), as the reference draws it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from maggie.models.ops.loss_terms import (
    dtssd_loss,
    excess_sum_loss,
    gradient_loss,
    laplacian_loss,
    meeting_sum_loss,
    os8_bce,
    os8_weights,
    other_people,
    people_meeting,
    temporal_sparsity_loss,
    weighted_l1,
)
from maggie.models.ops.sum_rule import limit_sum

if TYPE_CHECKING:  # the weights are any object with these attributes (config.params.LossWeights)
    from maggie.config.params import LossWeights


def training_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], w: LossWeights
                  ) -> dict[str, torch.Tensor]:
    """out: the model's training outputs ``[B, T, N, H, W]``; batch: ``alpha`` (and ``transition`` for video)."""
    gt = batch["alpha"]
    b, t, n, h, w_ = gt.shape
    # Slots without an instance in a frame carry no loss; the reference masked by its
    # transition map here, which for video zeroes whole frames without motion (a bug).
    valid = (gt.sum((3, 4), keepdim=True) > 0) | (batch["mask"].sum((3, 4), keepdim=True) > 0)
    valid = valid.to(gt.dtype)
    a8, a4, a1 = (out[k] * valid for k in ("alpha_os8", "alpha_os4", "alpha_os1"))
    if w.loss_after_sum_rule:
        a8, a4, a1 = (limit_sum(a, batch["mask"]) for a in (a8, a4, a1))
    # MaGGIe draws between its refinement bands and its detail region; the MGM baselines have
    # no detail region and always use their bands (the reference's rule for them).
    if "detail_mask" in out and not torch.rand(()) < 0.75:
        w4 = w1 = out["detail_mask"]
    else:
        w4, w1 = out["weight_os4"], out["weight_os1"]
    w8 = os8_weights(gt, a8, w.loss_reweight_os8)
    if w.loss_occlusion_w > 0:
        occ = w.loss_occlusion_w * other_people(gt.flatten(0, 1)).view_as(gt) * valid
        w8, w4, w1 = w8 + occ, w4 + occ, w1 + occ
    # the band where people meet, [B*T, N, H, W]: weighted by loss_meeting_w, its sum held by loss_meeting_sum_w
    meeting = people_meeting(gt.flatten(0, 1)) if w.loss_meeting_w > 0 or w.loss_meeting_sum_w > 0 else None
    if w.loss_meeting_w > 0:
        meet = w.loss_meeting_w * meeting.view_as(gt) * valid
        w8, w4, w1 = w8 + meet, w4 + meet, w1 + meet
    flat = [x.reshape(b * t, n, h, w_) for x in (gt, a8, a4, a1, w8, w4, w1)]
    g, p8, p4, p1, q8, q4, q1 = flat
    terms: dict[str, torch.Tensor] = {}
    total = gt.new_zeros(())
    rec = 2 * weighted_l1(p1, g, q1) + weighted_l1(p4, g, q4) + weighted_l1(p8, g, q8)
    terms["loss_rec"] = rec
    total = total + w.loss_alpha_w * rec
    if w.loss_alpha_lap_w > 0:
        lap = 2 * laplacian_loss(p1, g, q1) + laplacian_loss(p4, g, q4) + laplacian_loss(p8, g, q8)
        terms["loss_lap"] = lap
        total = total + w.loss_alpha_lap_w * lap
    if w.loss_alpha_grad_w > 0:
        grad = 2 * gradient_loss(p1, g, q1) + gradient_loss(p4, g, q4) + gradient_loss(p8, g, q8)
        terms["loss_grad"] = grad
        total = total + w.loss_alpha_grad_w * grad
    if w.loss_os8_bce_w > 0 and "logits_os8" in out:
        bce = os8_bce(out["logits_os8"].flatten(0, 1), gt.reshape(b * t, n, h, w_), valid.reshape(b * t, n, 1, 1))
        terms["loss_os8_bce"] = bce
        total = total + w.loss_os8_bce_w * bce
    if w.loss_sum_one_w > 0:
        one = 2 * excess_sum_loss(p1) + excess_sum_loss(p4) + excess_sum_loss(p8)
        terms["loss_sum_one"] = one
        total = total + w.loss_sum_one_w * one
    if w.loss_meeting_sum_w > 0:
        band = meeting.amax(1)
        msum = 2 * meeting_sum_loss(p1, g, band) + meeting_sum_loss(p4, g, band) + meeting_sum_loss(p8, g, band)
        terms["loss_meeting_sum"] = msum
        total = total + w.loss_meeting_sum_w * msum
    if w.loss_dtSSD_w > 0 and t > 1:
        dt = 2 * dtssd_loss(a1, gt, w1) + dtssd_loss(a4, gt, w4) + dtssd_loss(a8, gt, w8)
        terms["loss_dtSSD"] = dt
        total = total + w.loss_dtSSD_w * dt
    if w.loss_atten_w > 0 and "loss_atten" in out:
        terms["loss_atten"] = out["loss_atten"]
        total = total + w.loss_atten_w * out["loss_atten"]
    if w.loss_temp_w > 0 and "diff_forward_logits" in out and t > 1:
        temp = temporal_sparsity_loss(out["diff_forward_logits"], out["diff_backward_logits"], batch["transition"])
        terms["loss_temp"] = temp
        total = total + w.loss_temp_w * temp
    terms["total"] = total
    return terms

