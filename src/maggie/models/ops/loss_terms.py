"""Loss terms of MaGGIe training, with the reference's definitions and numeric scales.

Inputs are mattes ``[M, N, H, W]`` (M = batch x frames, N = instance slots) unless stated;
weights are region maps of the same shape.  The combination into the total objective,
with the loss weights from params.yaml, is in ``maggie.objective``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def weighted_l1(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(W |P - G|) / (sum W + 1e-8)."""
    return (torch.abs(pred * weight - gt * weight)).sum() / (weight.sum() + 1e-8)


def os8_weights(gt: torch.Tensor, alpha_os8: torch.Tensor, reweight: bool) -> torch.Tensor:
    """1 for slots that hold an instance, plus 1 where the true or the OS8 alpha is uncertain."""
    w = (gt.sum((-2, -1), keepdim=True) > 0).to(gt.dtype).expand_as(gt)
    if reweight:
        lo, hi = 1.0 / 255.0, 254.0 / 255.0
        unknown = ((gt >= lo) & (gt <= hi)) | ((alpha_os8 >= lo) & (alpha_os8 <= hi))
        w = w + unknown.to(gt.dtype)
    return w


def os8_bce(logits: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the OS8 head, ``alpha8 = sigmoid(2 z)``, against the true alpha averaged to OS8.

    logits ``[M, N, h, w]``, gt ``[M, N, H, W]``, valid ``[M, N, 1, 1]`` (slots that hold an instance).
    Unlike L1 on the tanh output, its gradient does not vanish where the head has saturated at 0
    or 1, which is where a network trained from scratch starts.
    """
    g8 = F.adaptive_avg_pool2d(gt, logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(2 * logits, g8, reduction="none")
    return (bce * valid).sum() / (valid.sum() * logits.shape[-2] * logits.shape[-1]).clamp_min(1)


def excess_sum_loss(pred: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of max(0, sum_i alpha_i - 1): people cannot cover a pixel more than fully.

    Not in MaGGIe's reference (InstMatt's sum-to-one term is its analogue): the true mattes of
    composited people add up to at most 1 everywhere, so the term is zero on the truth and only
    acts where two instances claim the same pixel, which L1 on each matte alone leaves to chance.
    """
    return torch.relu(pred.sum(1) - 1).mean()


def other_people(gt: torch.Tensor) -> torch.Tensor:
    """``[M, N, H, W]`` 1 where another instance's true alpha is above 0.5 and this one's is zero.

    Not in MaGGIe's reference: the pixels where a person's matte must stay off the people in front of
    (or beside) it.  A network that completes an occluded person's silhouette puts alpha there, which
    no loss of the reference singles out (on comp_hard that error is ~0.1 of the mask's total).
    """
    if gt.shape[1] < 2:
        return torch.zeros_like(gt)
    top = gt.topk(2, dim=1)
    first = top.values[:, :1].expand_as(gt)
    is_top = torch.arange(gt.shape[1], device=gt.device).view(1, -1, 1, 1) == top.indices[:, :1]
    others = torch.where(is_top, top.values[:, 1:2].expand_as(gt), first)
    return ((others > 0.5) & (gt <= 1.0 / 255.0)).to(gt.dtype)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_GAUSS = (_BINOMIAL[:, None] * _BINOMIAL[None, :]) / 256.0


def people_meeting(gt: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """``[M, N, H, W]`` 1 within ``radius`` px of both this instance's alpha > 0.5 and another's.

    Not in MaGGIe's reference: the band where one person passes in front of another.  There the back
    person's matte is the complement of the front person's edge, which the network resolves far worse than
    an edge against the background (comp_hard: 9% of a perfect binary mask's error removed there against 45%,
    benchmarks/README.md), and the band is a small share of any training crop's pixels.
    """
    if gt.shape[1] < 2:
        return torch.zeros_like(gt)
    fg = (gt > 0.5).to(gt.dtype)
    others = ((fg.sum(1, keepdim=True) - fg) > 0).to(gt.dtype)
    size = 2 * radius + 1
    near_self = F.max_pool2d(fg, size, stride=1, padding=radius)
    near_others = F.max_pool2d(others, size, stride=1, padding=radius)
    return near_self * near_others


def meeting_sum_loss(pred: torch.Tensor, gt: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Mean over the band where people meet (``band [M, H, W]``) of |sum_i pred_i - sum_i gt_i|.

    Not in MaGGIe's reference: where one person passes in front of another the back person's true matte is
    the complement of the front person's edge, so the true mattes add up to about 1 there; networks give both
    soft edges instead, as against a background, and their mattes add up to less (comp_hard: of the pixels
    people cover fully, 17.6% get mattes adding up to < 0.9; benchmarks/README.md).  L1 on each matte alone
    does not see that both are low at once; ``excess_sum_loss`` only pushes the total down.
    """
    err = torch.abs(pred.sum(1) - gt.sum(1)) * band
    return err.sum() / (band.sum() + 1e-6)


def filter_maps(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every map of ``x [M, C, H, W]`` with one fixed 2-D ``kernel`` (no padding).

    The maps are laid out as the channels of a single depthwise convolution: oneDNN's
    backward for a one-channel convolution over a batch of M maps is about 15x slower on CPU
    (it was a third of a training step); the result is identical.
    """
    m, c, h, w = x.shape
    kh, kw = kernel.shape
    k = kernel.to(x)[None, None].expand(m * c, 1, kh, kw)
    y = F.conv2d(x.reshape(1, m * c, h, w), k, groups=m * c)
    return y.reshape(m, c, h - kh + 1, w - kw + 1)


def _blur(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return filter_maps(F.pad(x, (2, 2, 2, 2), mode="reflect"), _GAUSS * scale)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    up = torch.zeros(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2, dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4.0)


def band_pass(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Laplacian-pyramid levels of ``x [M, C, H, W]``, finest first; stops below 3 px (too small to blur)."""
    bands = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 3:
            break
        h, w = x.shape[-2:]
        down = _blur(x)[:, :, ::2, ::2]
        bands.append(x - _upsample(down)[..., :h, :w])
        x = down
    return bands


def laplacian_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Weighted L1 between 3-level Laplacian pyramids (5x5 binomial kernel, reflect padding).

    The reference convolves the one-channel mattes with a three-channel kernel, so every level
    is triplicated and its loss is 3x a single-channel one; the published loss weights were
    tuned with that scale, so it is kept (as an explicit factor).  Unlike the reference's
    zero-insertion upsampling (square inputs only), this works for any size.
    """
    p = pred.reshape(-1, 1, *pred.shape[-2:])
    g = gt.reshape(-1, 1, *gt.shape[-2:])
    w = weight.reshape(-1, 1, *weight.shape[-2:])
    total = pred.new_zeros(())
    for lp, lg in zip(band_pass(p, levels), band_pass(g, levels), strict=True):
        total = total + 3.0 * (torch.abs(lp - lg) * w).sum() / (w.sum() + 1e-6)
        w = w[:, :, ::2, ::2]
    return total


def pyramid_l1(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """InstMatt's (FBA Matting's) Laplacian loss: weighted L1 per level, level i weighted 2^i.

    ``pred``/``gt`` ``[M, C, H, W]`` with ``weight`` ``[M, 1, H, W]`` broadcast over the channels
    (each level normalised by the weight's own sum, as the reference does); each level halves
    the weight map by taking every other pixel.  Levels below 3 px (too small to blur) are skipped."""
    total = pred.new_zeros(())
    w = weight
    for i, (lp, lg) in enumerate(zip(band_pass(pred, levels), band_pass(gt, levels), strict=True)):
        total = total + (2 ** i) * weighted_l1(lp, lg, w)
        w = w[:, :, ::2, ::2]
    return total


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _sobel_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    n = x.reshape(-1, 1, *x.shape[-2:])
    padded = F.pad(n, (1, 1, 1, 1), mode="replicate")
    gx = filter_maps(padded, _SOBEL_X)
    gy = filter_maps(padded, _SOBEL_X.t())
    return torch.sqrt(gx * gx + gy * gy + eps).reshape(x.shape)


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes of W*P and W*G (weights applied *before* the filter)."""
    return torch.abs(_sobel_magnitude(pred * weight) - _sobel_magnitude(gt * weight)).sum() / (weight.sum() + eps)


def dtssd_loss(pred: torch.Tensor, gt: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Temporal-derivative SSD on clips ``[B, T, N, H, W]``, weighted at the later frame of each pair.

    A clip of one frame has no pair: 0 (the reference divides 0 by 0 there).
    """
    if pred.shape[1] < 2:
        return pred.sum() * 0.0
    dp = pred[:, 1:] - pred[:, :-1]
    dg = gt[:, 1:] - gt[:, :-1]
    w = weight[:, 1:]
    return (((dp - dg) ** 2) * w).sum() / (w + 1e-6).sum()


def temporal_sparsity_loss(diff_forward: torch.Tensor, diff_backward: torch.Tensor,
                           transition: torch.Tensor) -> torch.Tensor:
    """Supervise the change heads with the true change maps.

    diff_*: logits ``[B, T, 1, H, W]`` (forward: change from t-1 to t, stored at t; backward:
    from t+1 to t, stored at t); transition ``[B, T, N, H, W]``, 1 where a matte changed from
    the previous frame (slot 0 holds the union, as the reference builds it).
    0.25 * (BCE fwd + BCE bwd + dtSSD(sigmoid fwd) + dtSSD(sigmoid bwd)).
    """
    target = transition[:, 1:, :1]
    bce = F.binary_cross_entropy_with_logits(diff_forward[:, 1:, 0], target[:, :, 0]) + \
        F.binary_cross_entropy_with_logits(diff_backward[:, :-1, 0], target[:, :, 0])
    ones = torch.ones_like(target)
    dt = dtssd_loss(diff_forward[:, 1:].sigmoid(), target, ones) + dtssd_loss(diff_backward[:, :-1].sigmoid(),
                                                                                target, ones)
    return 0.25 * (bce + dt)
