"""FTP-VM's guidance and training loss: trimaps from alphas or masks (OpenCV's morphology without OpenCV),
the authors' random training trimaps, and their GFM matting loss (``model/losses.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from maggie.models.ops.loss_terms import band_pass

# ----------------------------------------------------------------------------------------------
# Guidance: trimaps from alphas / masks, OpenCV's morphology without OpenCV
# ----------------------------------------------------------------------------------------------

RECT, ELLIPSE, FLAT_ELLIPSE, TALL_ELLIPSE = 1, 2, 3, 4  # the authors' kernel shapes (dataset/util.py)
EVAL_TRIMAP_WIDTH, EVAL_REF_SIZE = 25, 576  # their --trimap_width 25 at the 576 x 1024 benchmark size
TRAIN_TRIMAP_WIDTHS, TRAIN_REF_SIZE = (3, 31), 480  # their np.random.randint(1, 16) * 2 + 1 on --size 480 crops
_CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])


@lru_cache(maxsize=256)
def _structuring_element(ellipse: bool, width: int, height: int) -> tuple[tuple[int, ...], ...]:
    """OpenCV's ``getStructuringElement(MORPH_ELLIPSE or MORPH_RECT, (width, height))`` row by row."""
    if not ellipse or (width, height) == (1, 1):
        return tuple((1,) * width for _ in range(height))
    r, c = height // 2, width // 2
    inv_r2 = 1.0 / (r * r) if r else 0.0
    rows = []
    for i in range(height):
        row = [0] * width
        dy = i - r
        if abs(dy) <= r:
            dx = int(np.rint(c * math.sqrt((r * r - dy * dy) * inv_r2)))
            for j in range(max(c - dx, 0), min(c + dx + 1, width)):
                row[j] = 1
        rows.append(tuple(row))
    return tuple(rows)


def trimap_kernel(width: int, shape: int = ELLIPSE) -> Tensor:
    """The authors' dilation kernels (``_get_kernel`` / ``_get_random_kernel``) as ``[h, w]`` 0/1 maps.

    ``shape``: 1 a ``width`` square, 2 a circle (their evaluation's), 3 an ellipse ``width`` wide and
    ``width // 2`` high, 4 one ``width // 2`` wide and ``width`` high.
    """
    w, h = {RECT: (width, width), ELLIPSE: (width, width), FLAT_ELLIPSE: (width, width // 2),
            TALL_ELLIPSE: (width // 2, width)}[shape]
    return torch.tensor(_structuring_element(shape != RECT, w, h), dtype=torch.float32)


def ellipse_kernel(size: int) -> Tensor:
    return trimap_kernel(size, ELLIPSE)


def dilate(binary: Tensor, kernel: int | Tensor) -> Tensor:
    """``cv2.dilate`` of ``[..., H, W]`` binary maps (outside ignored, anchor at the kernel's centre).

    ``kernel``: an ellipse's size, or a ``[h, w]`` 0/1 map (``trimap_kernel``)."""
    if isinstance(kernel, int):
        if kernel <= 1:
            return binary.bool()
        kernel = ellipse_kernel(kernel)
    kh, kw = kernel.shape
    shape = binary.shape
    x = binary.reshape(-1, 1, *shape[-2:]).float()
    x = F.pad(x, (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2))
    return (F.conv2d(x, kernel.to(x)[None, None]) > 0.5).reshape(shape)


def erode(binary: Tensor, kernel: int | Tensor) -> Tensor:
    """``cv2.erode`` (outside counts as foreground, OpenCV's default border for erosion)."""
    return ~dilate(~binary.bool(), kernel)


def trimap_from_alpha(alpha: Tensor, width: int = EVAL_TRIMAP_WIDTH, eps: float = 5e-3, shape: int = ELLIPSE) -> Tensor:
    """The authors' ``get_dilated_trimaps``: the memory trimap of their evaluation (``--trimap_width 25``).

    Unknown = dilate(alpha > eps) minus erode(alpha > 1 - eps) with the ``width`` kernel of ``shape``
    (``trimap_kernel``); works on a binary mask too (then the unknown band straddles the mask edge).
    ``[..., H, W]`` -> 0 / 0.5 / 1.
    """
    k = trimap_kernel(width, shape)
    a = alpha.clamp(0, 1)
    grown = dilate(a > eps, k).float()
    core = erode(a > 1 - eps, k).float()
    return core + (grown - core) * 0.5


def memory_trimap_maggie(alpha: Tensor, size: int = 15) -> Tensor:
    """The memory "trimap" MaGGIe's FTP-VM script (``tools/FTP-VM/inference_multi_instance.py``) made.

    The first frame's alpha (resized, in 0..1) with its soft pixels (1/255 < a < 254/255.9) dilated
    by a ``size`` ellipse set to 0.5; every other pixel keeps its alpha value.  A binary mask has no soft
    pixels, so it passes through unchanged.
    """
    soft = (alpha > 1.0 / 255.0) & (alpha < 254.0 / 255.9)
    out = alpha.clone()
    out[dilate(soft, size)] = 0.5
    return out


def scale_width(width: int, size: int, ref_size: int, min_width: int = 3) -> int:
    """The odd width nearest ``width * size / ref_size`` and at least ``min_width``: the same band, relative
    to the frame, as ``width`` at ``ref_size`` (e.g. the eval trimap: 25 at 576 -> 7 at 160)."""
    s = width * size / ref_size
    return max(min_width, 2 * math.floor((s - 1) / 2 + 0.5) + 1)


def random_trimap_kernel(size: int, generator: torch.Generator | None = None,
                         widths: tuple[int, int] = TRAIN_TRIMAP_WIDTHS, ref_size: int = TRAIN_REF_SIZE,
                         min_width: int = 3) -> tuple[int, int]:
    """One clip's training kernel ``(width, shape)``, drawn as the authors' datasets draw it.

    Their ``np.random.randint(1, 16) * 2 + 1``: an odd width uniform in ``widths`` = (3, 31), on 480 x 480
    crops, then a shape uniform in 1..4 (``trimap_kernel``).  The width is then scaled by
    ``size / ref_size`` (``size`` = the crop's short side; rounded to the nearest odd, at least
    ``min_width``), so the band covers the same fraction of the frame as theirs: 128 px crops get widths
    3..9, 192 px 3..13.  ``ref_size=size`` keeps their widths in pixels.
    """
    if min_width < 3:
        raise ValueError("min_width must be >= 3 (shapes 3 and 4 halve the width)")
    k = 2 * int(torch.randint(widths[0] // 2, widths[1] // 2 + 1, (), generator=generator)) + 1
    shape = int(torch.randint(1, 5, (), generator=generator))
    return scale_width(k, size, ref_size, min_width), shape


def trimap_label(trimap: Tensor) -> Tensor:
    """The authors' ``get_label_from_trimap``: ``[..., 1, H, W]`` trimap -> ``[..., H, W]`` long labels,
    0 background, 1 unknown, 2 foreground."""
    label = torch.zeros_like(trimap, dtype=torch.long)
    label[trimap >= 1e-5] = 1
    label[trimap >= 1 - 1e-5] = 2
    return label.squeeze(-3)


def training_targets(gt_alpha: Tensor, rng: torch.Generator | None = None,
                     kernels: Sequence[tuple[int, int]] | None = None,
                     widths: tuple[int, int] = TRAIN_TRIMAP_WIDTHS, ref_size: int = TRAIN_REF_SIZE,
                     min_width: int = 3) -> dict[str, Tensor]:
    """Targets of the authors' matting pass from true alphas ``[R, T, 1, H, W]`` (one clip or object per row).

    Per row, one kernel for all its frames (``random_trimap_kernel``: their width and shape draw, the
    width scaled to the frame's short side; or ``kernels[r] = (width, shape)`` as given), then
    ``trimap_from_alpha`` per frame and ``trimap_label``.  Returns ``trimap [R, T, 1, H, W]``, ``label
    [R, T, H, W]``, ``memory_trimap [R, 1, 1, H, W]`` (frame 0's: the authors' memory trimap) and
    ``kernels [R, 2]``.
    """
    size = min(gt_alpha.shape[-2:])
    if kernels is None:
        kernels = [random_trimap_kernel(size, rng, widths, ref_size, min_width) for _ in range(gt_alpha.size(0))]
    trimap = torch.stack([trimap_from_alpha(a, k, shape=s) for a, (k, s) in zip(gt_alpha, kernels, strict=True)])
    return {"trimap": trimap, "label": trimap_label(trimap), "memory_trimap": trimap[:, :1],
            "kernels": torch.tensor(kernels, dtype=torch.long).reshape(-1, 2)}


# ----------------------------------------------------------------------------------------------
# The authors' GFM matting loss (model/losses.py: MatLossComputer.gfm_loss, FocalLoss, LapLoss,
# TotalVariationLoss "temp_seg_allclass_weight")
# ----------------------------------------------------------------------------------------------


def focal_loss(logits: Tensor, label: Tensor, gamma: float = 2.0) -> Tensor:
    """Their ``FocalLoss()`` (gamma 2, no class weights): mean over pixels of -(1 - p_t)^gamma log p_t.

    ``logits [R, T, 3, H, W]``, ``label [R, T, H, W]``."""
    log_pt = F.log_softmax(logits, dim=2).gather(2, label.unsqueeze(2))
    return ((1 - log_pt.exp()) ** gamma * -log_pt).mean()


def temporal_class_consistency(logits: Tensor, label: Tensor, true_weight: float = 0.5,
                               other_weight: float = 0.25) -> Tensor:
    """Their ``seg_inconsistency_temp_all_class_with_weight`` (``--tvloss_type temp_seg_allclass_weight``).

    |sigmoid(logit_t) - sigmoid(logit_t+1)| on all 3 classes (the true class of frame t weighted 0.5,
    the others 0.25), counted where the true label stays the same between t and t+1 within a 2-step
    cross (diamond) neighbourhood and at least one of the two frames is predicted right (arg-max of the
    sigmoids); the weighted mean.  0 for one-frame clips (theirs has no pair there).
    """
    if logits.size(1) < 2:
        return logits.sum() * 0.0
    prob = torch.sigmoid(logits)
    right = prob.argmax(2) == label
    changed = dilate(dilate(label[:, :-1] != label[:, 1:], _CROSS), _CROSS)
    mask = ((right[:, :-1] | right[:, 1:]) & ~changed).to(prob.dtype).unsqueeze(2)
    onehot = F.one_hot(label[:, :-1], 3).permute(0, 1, 4, 2, 3)
    weight = (onehot * (true_weight - other_weight) + other_weight) * mask
    return ((prob[:, :-1] - prob[:, 1:]).abs() * weight).sum() / (weight.sum() + 1e-5)


def laplacian_l1(pred: Tensor, gt: Tensor, levels: int = 5) -> Tensor:
    """Their ``LapLoss(max_levels=5)``: sum over levels of 2^level x sum |band(pred) - band(gt)|, divided by the
    full-resolution pixel count (their pyramid needs H, W multiples of 32; this one takes any size)."""
    bands = zip(band_pass(pred, levels), band_pass(gt, levels), strict=True)
    return sum((2 ** i) * (lp - lg).abs().sum() for i, (lp, lg) in enumerate(bands)) / pred.numel()


def alpha_terms(pred: Tensor, gt: Tensor, mask: Tensor | None = None, lambda_tc: float = 5.0,
                levels: int = 5) -> dict[str, Tensor]:
    """Their ``alpha_loss`` on ``[R, T, 1, H, W]`` mattes: L1 (mean, or over the mask's pixels), Laplacian
    and coherence (MSE of the frame-to-frame differences x ``lambda_tc``), the last two on the masked mattes."""
    diff = (pred - gt).abs()
    if mask is None:
        l1 = diff.mean()
    else:
        l1 = (diff * mask).sum() / mask.sum().clamp_min(1.001e-5)
        pred, gt = pred * mask, gt * mask
    lap = laplacian_l1(pred.flatten(0, 1), gt.flatten(0, 1), levels)
    if pred.size(1) < 2:  # theirs is NaN (MSE of empty tensors) on one-frame clips
        coherence = pred.sum() * 0.0
    else:
        coherence = F.mse_loss(pred[:, 1:] - pred[:, :-1], gt[:, 1:] - gt[:, :-1]) * lambda_tc
    return {"pha_l1": l1, "pha_laplacian": lap, "pha_coherence": coherence}


def ftpvm_loss(out: dict[str, Tensor], gt_alpha: Tensor, gt_trimap_label: Tensor, lambda_segtv: float = 10.0,
               lambda_tc: float = 5.0, gamma: float = 2.0, levels: int = 5) -> dict[str, Tensor]:
    """The authors' matting-pass loss (``MatLossComputer.gfm_loss`` with their defaults), unweighted sum.

    ``out``: ``FTPVM.forward_train``'s ``trimap_logits``, ``boundary``, ``collab`` (``[R, T, ...]``);
    ``gt_alpha [R, T, 1, H, W]``; ``gt_trimap_label [R, T, H, W]`` (``training_targets``).  Terms, named
    ``loss_`` + their names: ``seg_bce`` (the focal loss), ``seg_tv`` (x ``lambda_segtv``), then
    ``focus_pha_{l1,laplacian,coherence}`` on the boundary matte inside the true unknown band and
    ``collab_pha_*`` on the fused alpha, unmasked; ``total`` is their sum (their ``total_loss``).
    """
    gt = gt_alpha if gt_alpha.dim() == 5 else gt_alpha.unsqueeze(2)
    logits = out["trimap_logits"]
    terms = {"loss_seg_bce": focal_loss(logits, gt_trimap_label, gamma),
             "loss_seg_tv": temporal_class_consistency(logits, gt_trimap_label) * lambda_segtv}
    unknown = (gt_trimap_label == 1).unsqueeze(2)
    for name, pred, mask in (("focus", out["boundary"], unknown), ("collab", out["collab"], None)):
        for k, v in alpha_terms(pred, gt, mask, lambda_tc, levels).items():
            terms[f"loss_{name}_{k}"] = v
    terms["total"] = sum(terms.values())
    return terms
