"""MaGGIe decoders: dense trunk to OS8, instance matte decoder, sparse OS4/OS1 refinement.

``MaggieDecoder`` is the reference's ``res_shortcut_inst_matt_spconv_22``;
``MaggieTemporalDecoder`` adds the Conv-GRU on OS8 features and the temporal-difference
head (``res_shortcut_inst_matt_spconv_temp_22``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.maggie.imd import InstanceMatteDecoder
from maggie.models.maggie.refinement import SparseRefiner
from maggie.models.maggie.temporal import ConvGRU
from maggie.models.ops.blocks import make_decoder_layer, to_alpha, to_alpha_
from maggie.models.ops.morphology import compute_unknown, gaussian_smoothing_reference
from maggie.models.ops.reductions import any_along, has_nonzero
from maggie.models.ops.spectral_norm import sn_conv1x1, sn_conv3x3
from maggie.models.ops.tile_conv import LazyBranch


@dataclass
class DecoderState:
    """Training-time inputs that change how the decoder selects its detail region."""

    iteration: int = 0
    gt_alpha: torch.Tensor | None = None  # [B*T, max_inst, H, W]
    warmup_detail_iter: int = 3000


def fuse_progressive(alpha8, alpha4, alpha1, detail, train: bool, boxes: bool = True):
    """OS8 everywhere, OS4 in a band around the OS8 uncertainty, OS1 in a thinner band, inside D.

    ``boxes``: dilate each map inside its uncertain pixels' box only (the same result; ``False`` for maps that are
    already such boxes)."""
    w4 = ((compute_unknown(alpha8, 27, train, boxes=boxes) * detail) > 0).to(alpha8.dtype)
    alpha = torch.where(w4 > 0, alpha4.to(alpha8.dtype), alpha8)  # the blend of 0/1 weights, in one pass
    w1 = ((compute_unknown(alpha, 15, train, boxes=boxes) * detail) > 0).to(alpha8.dtype)
    alpha = torch.where(w1 > 0, alpha1.to(alpha8.dtype), alpha)
    return alpha, w4, w1


def fuse_in_boxes(alpha8: torch.Tensor, detail: torch.Tensor, logits4: torch.Tensor, logits1: torch.Tensor,
                  active: torch.Tensor | None = None):
    """Evaluation's ``refine`` squashing and ``fuse_progressive`` done inside each map's box of D only.

    alpha8, detail ``[BT, n, H, W]``; logits4 ``[BT, n, H/4, W/4]`` and logits1 ``[BT, n, H, W]``, -99
    outside D.  The same mattes as the full maps give: outside D the logits are -99 (alpha exactly 0, and
    bilinear upsampling of -99s is -99), every uncertain pixel of alpha8 or of the fused matte lies in D,
    and the box is D's bounding box grown by two OS4 pixels (the OS4 sites reach one beyond D, and the
    upsampling reads one more).  With several people each covering a few percent of a frame, this
    replaces some thirty passes over every person's full-resolution map by passes over its box; the boxes
    are fused as one zero-padded batch (outside its box a map is certain and outside D, as beyond a lone box's
    edge), so the thirty passes are not repeated per person either.  ``active``: ``detail > 0``, if the caller
    has it (its rows and columns are a byte max, not a float one).
    """
    bt, n, h, w = alpha8.shape
    alpha4, alpha1, alpha = torch.zeros_like(alpha8), torch.zeros_like(alpha8), alpha8.clone()
    active = detail > 0 if active is None else active
    rows, cols = any_along(active, -1), any_along(active, -2)  # [BT, n, H], [BT, n, W]
    boxes = []
    for b_, i in torch.nonzero(any_along(rows, -1)).tolist():
        ys, xs = torch.nonzero(rows[b_, i]).flatten(), torch.nonzero(cols[b_, i]).flatten()
        y0, y1 = max(int(ys[0]) // 4 - 2, 0), min(-(-(int(ys[-1]) + 1) // 4) + 2, h // 4)
        x0, x1 = max(int(xs[0]) // 4 - 2, 0), min(-(-(int(xs[-1]) + 1) // 4) + 2, w // 4)
        boxes.append(((b_, slice(i, i + 1), slice(4 * y0, 4 * y1), slice(4 * x0, 4 * x1)),
                      (b_, slice(i, i + 1), slice(y0, y1), slice(x0, x1))))  # the box at full size and at OS4
    if not boxes:
        return alpha4, alpha1, alpha
    bh, bw = max(box[2].stop - box[2].start for box, _ in boxes), max(box[3].stop - box[3].start for box, _ in boxes)
    a8, d, a4, l1 = (alpha8.new_full((len(boxes), 1, bh, bw), v) for v in (0.0, 0.0, 0.0, -99.0))
    crops = [(slice(None), slice(0, box[2].stop - box[2].start), slice(0, box[3].stop - box[3].start))
             for box, _ in boxes]  # each box's corner of the batch
    for j, ((box, box4), crop) in enumerate(zip(boxes, crops, strict=True)):
        a8[j][crop], d[j][crop], l1[j][crop] = alpha8[box], detail[box], logits1[box]
        a4[j][crop] = F.interpolate(logits4[box4][None], scale_factor=4.0, mode="bilinear", align_corners=False)[0]
    a4, a1 = to_alpha(a4), to_alpha(l1)
    fused, _, _ = fuse_progressive(a8, a4, a1, d, False, boxes=False)
    for j, ((box, _), crop) in enumerate(zip(boxes, crops, strict=True)):
        alpha4[box], alpha1[box], alpha[box] = a4[j][crop], a1[j][crop], fused[j][crop]
    return alpha4, alpha1, alpha


def _boxes_allowed() -> bool:
    """Data-dependent crops cannot be exported or compiled; those take the full maps."""
    return not (torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling())


class MaggieDecoder(SparseRefiner):
    def __init__(self, max_inst: int = 10, atten_dim: int = 128, atten_blocks: int = 2, atten_heads: int = 1,
                 final_channel: int = 64, warmup_detail_iter: int = 3000, refine_mode: str = "sparse"):
        super().__init__(final_channel)
        self.max_inst = max_inst
        self.warmup_detail_iter = warmup_detail_iter
        self.refine_mode = refine_mode
        self.layer1 = make_decoder_layer(512, 256, 2)
        self.layer2 = make_decoder_layer(256, 128, 3)
        self.refine_OS8 = InstanceMatteDecoder(128, atten_dim, atten_blocks, atten_heads, final_channel, max_inst)

    def trunk(self, x: torch.Tensor, shortcuts) -> torch.Tensor:
        fea1, fea2, fea3, fea4, fea5 = shortcuts
        x = self.layer1(x) + fea5
        return self.layer2(x) + fea4

    def temporal_fn(self, t: int):
        return None

    def forward(self, x: torch.Tensor, mid: dict, b: int, t: int, masks: torch.Tensor,
                state: DecoderState | None = None) -> dict[str, torch.Tensor]:
        """x: ASPP output ``[B*T, 512, H/32, W/32]``; masks ``[B, T, n, H, W]``."""
        n = masks.shape[2]
        shortcuts = mid["shortcut"]
        image = mid["image"]
        h, w = image.shape[-2:]
        feat8 = self.trunk(x, shortcuts)
        gt_masks = None
        if self.training and state is not None and state.gt_alpha is not None:
            gt_masks = (state.gt_alpha > 0).reshape(b, t, n, h, w)
        imd = self.refine_OS8(feat8, masks, gt_masks=gt_masks, temporal=self.temporal_fn(t))
        if self.training:
            logits8 = F.interpolate(imd["logits"], size=(h, w), mode="bilinear", align_corners=False)
            alpha8 = to_alpha(logits8) * (masks.flatten(0, 1).sum((2, 3), keepdim=True) > 0)
        else:  # only the people asked for, not every slot
            alpha8 = to_alpha_(F.interpolate(imd["logits"][:, :n], size=(h, w), mode="bilinear", align_corners=False))

        guide, use_gt = self.select_guide(alpha8, state)
        alpha8, detail = self.detail_region(alpha8, guide)
        kernels = imd["kernels"][:, None].expand(-1, t, -1, -1).reshape(b * t, self.max_inst, -1)[:, :n]
        boxed = not self.training and _boxes_allowed()
        active = detail > 0  # D as booleans, once: the refinement's sites and the boxes of the fusion
        alpha4, alpha1 = self.refine(detail, imd["feat"], kernels, shortcuts, n, squash=not boxed, active=active)
        if boxed:
            alpha4, alpha1, alpha = fuse_in_boxes(alpha8, detail, alpha4, alpha1, active)
        else:
            alpha, w4, w1 = fuse_progressive(alpha8, alpha4, alpha1, detail, self.training)
        out = {"alpha_os8": alpha8, "alpha_os4": alpha4, "alpha_os1": alpha1, "alpha": alpha,
               "detail_mask": detail, "feat": imd["feat"]}
        if self.training:
            if use_gt:
                gt = state.gt_alpha
                w4 = compute_unknown(gt, 30, True) * detail
                w1 = compute_unknown(gt, 15, True) * detail
            out.update(weight_os4=w4, weight_os1=w1, loss_atten=imd.get("loss_atten"), logits_os8=imd["logits"])
        return out

    def select_guide(self, alpha8: torch.Tensor, state: DecoderState | None):
        """Detail-branch guide: the OS8 matte, or the true alpha during the warm-up of training."""
        if not self.training or state is None or state.gt_alpha is None:
            return alpha8, False
        it, warm = state.iteration, self.warmup_detail_iter
        if it < warm or alpha8.sum() == 0 or (it < 3 * warm and random.random() < 0.5):
            return state.gt_alpha, True
        return alpha8, False

    def detail_region(self, alpha8: torch.Tensor, guide: torch.Tensor):
        detail = compute_unknown(guide, 30)
        return alpha8, detail

    def refine(self, detail, feat8, kernels, shortcuts, n, squash: bool = True, active: torch.Tensor | None = None):
        """OS4 (upsampled) and OS1 mattes ``[BT, n, H, W]``; ``squash=False``: their logits, OS4 at H/4.
        ``active``: ``detail > 0``, if the caller has it."""
        bt = feat8.shape[0]
        h, w = detail.shape[-2:]
        if self.training and detail.max() == 0:
            detail = detail.clone()
            detail[:, :, 200:250, 200:250] = 1.0  # the reference's guard against an empty region
            active = None
        active = detail > 0 if active is None else active
        if not self.training and not has_nonzero(active):
            if not squash:
                return detail.new_full((bt, n, h // 4, w // 4), -99.0), detail.new_full((bt, n, h, w), -99.0)
            zeros = detail.new_zeros(bt, n, h, w)
            return zeros, zeros.clone()
        mode = "dense" if torch.onnx.is_in_onnx_export() else self.refine_mode
        fea1, fea2, fea3 = (f.dense() if isinstance(f, LazyBranch) and mode == "dense" else f for f in shortcuts[:3])
        logits4, logits1 = self.refine_logits(active.reshape(bt * n, h, w), feat8, kernels, (fea1, fea2, fea3),
                                        n, mode=mode)
        if not squash:
            return logits4.reshape(bt, n, h // 4, w // 4), logits1.reshape(bt, n, h, w)
        logits4 = F.interpolate(logits4.reshape(bt, n, h // 4, w // 4), scale_factor=4.0, mode="bilinear",
                                align_corners=False)
        return to_alpha(logits4), to_alpha(logits1.reshape(bt, n, h, w))


class MaggieTemporalDecoder(MaggieDecoder):
    """Video decoder: Conv-GRU over OS8 features, box suppression and temporal-difference fusion."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.os8_temp_module = ConvGRU(128)
        self.diff_module = nn.Sequential(
            sn_conv1x1(128, 64), nn.BatchNorm2d(64), nn.ReLU(),
            sn_conv3x3(64, 32), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 1, 3, padding=1, bias=False),
        )

    def temporal_fn(self, t: int):
        return self.os8_temp_module.bidirectional

    def detail_region(self, alpha8: torch.Tensor, guide: torch.Tensor):
        if self.training:
            return alpha8, compute_unknown(guide, 30)
        # Inference-only: confident OS8 values snap to 1 (the guide is the same tensor),
        # and D and alpha8 are cleared outside each instance's padded box.
        alpha8 = torch.where(alpha8 >= 0.95, torch.ones_like(alpha8), alpha8)
        detail = compute_unknown(alpha8, 30)
        box = instance_boxes(alpha8)
        return alpha8 * box, detail * box

    def forward(self, x, mid, b, t, masks, state=None):
        out = super().forward(x, mid, b, t, masks, state)
        feat = out["feat"].reshape(b, t, *out["feat"].shape[1:]).detach()
        alpha = out["alpha"].reshape(b, t, *out["alpha"].shape[1:])
        diff_f, diff_b, fused = self.bidirectional_fusion(feat, alpha)
        out.update(temp_alpha=fused, diff_forward_logits=diff_f, diff_backward_logits=diff_b)
        return out

    def diff(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = self.diff_module(torch.cat([a, b], dim=1))
        return F.interpolate(d, scale_factor=8.0, mode="bilinear", align_corners=False)

    def bidirectional_fusion(self, feat: torch.Tensor, preds: torch.Tensor):
        """Soft recursive fusion of mattes by predicted change maps, forward and backward in time.

        feat ``[B, T, C, h, w]``, preds ``[B, T, n, H, W]`` -> change logits ``[B, T, 1, H, W]``
        (forward: change from t-1 to t, zero at t=0; backward: from t+1 to t, zero at T-1) and
        the fused mattes ``[B, T, n, H, W]``.
        """
        t = feat.shape[1]
        if t == 1:
            zero = preds.new_zeros(preds.shape[0], 1, 1, *preds.shape[-2:])
            return zero, zero.clone(), preds
        fwd_preds, fwd_diffs = [preds[:, 0]], []
        for i in range(1, t):
            d = self.diff(feat[:, i - 1], feat[:, i])
            fwd_diffs.append(d)
            s = d.sigmoid()
            fwd_preds.append(fwd_preds[-1] * (1 - s) + preds[:, i] * s)
        bwd_preds, bwd_diffs = [preds[:, t - 1]], []
        for i in range(t - 1, 0, -1):
            d = self.diff(feat[:, i], feat[:, i - 1])
            bwd_diffs.append(d)
            s = d.sigmoid()
            bwd_preds.append(bwd_preds[-1] * (1 - s) + preds[:, i - 1] * s)
        bwd_preds, bwd_diffs = bwd_preds[::-1], bwd_diffs[::-1]
        fused = [fwd_preds[0]] + [(fwd_preds[i] + bwd_preds[i]) / 2 for i in range(1, t - 1)] + [bwd_preds[-1]]
        diff_f = torch.stack([torch.zeros_like(fwd_diffs[0])] + fwd_diffs, dim=1)
        diff_b = torch.stack(bwd_diffs + [torch.zeros_like(bwd_diffs[-1])], dim=1)
        return diff_f, diff_b, torch.stack(fused, dim=1)


def instance_boxes(alpha8: torch.Tensor, thresh: float = 0.1, padding: int = 30) -> torch.Tensor:
    """Per map, 1 inside the bounding box (padded by 30 px) of the smoothed OS8 matte > 0.1, else 0.

    Maps with nothing above the threshold keep everything (as in the reference).
    """
    bt, n, h, w = alpha8.shape
    smooth = gaussian_smoothing_reference(alpha8, sigma=3) > thresh
    rows = any_along(smooth, -1)  # [bt, n, h]
    cols = any_along(smooth, -2)  # [bt, n, w]
    ar_h = torch.arange(h, device=alpha8.device)
    ar_w = torch.arange(w, device=alpha8.device)
    big = torch.iinfo(torch.long).max // 4
    y0 = torch.where(rows, ar_h, big).amin(-1)
    y1 = torch.where(rows, ar_h, -1).amax(-1)
    x0 = torch.where(cols, ar_w, big).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1)
    y0, x0 = (y0 - padding).clamp_min(0), (x0 - padding).clamp_min(0)
    y1, x1 = (y1 + padding).clamp_max(h), (x1 + padding).clamp_max(w)  # exclusive end, as the reference slices
    inside_y = (ar_h[None, None] >= y0[..., None]) & (ar_h[None, None] < y1[..., None])
    inside_x = (ar_w[None, None] >= x0[..., None]) & (ar_w[None, None] < x1[..., None])
    box = (inside_y[..., :, None] & inside_x[..., None, :]).to(alpha8.dtype)
    empty = ~any_along(rows, -1)
    return torch.where(empty[..., None, None], torch.ones_like(box), box)
