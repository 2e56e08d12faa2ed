"""Uncertain-region selection as the reference computes it, in torch (CPU, GPU, export).

``compute_unknown`` marks pixels with 1/255 < alpha < 254/255 and dilates them with
OpenCV's elliptical structuring element; we reproduce ``cv2.dilate`` exactly (kernel
anchor at its centre, outside of the image ignored) with boolean passes in torch, so no
round trip to numpy is needed.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from maggie.models.ops.reductions import any_along


@functools.lru_cache(maxsize=64)
def ellipse_kernel(size: int) -> np.ndarray:
    """OpenCV's elliptical structuring element, the one the reference dilates with."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def dilate(binary: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.dilate of ``[N, H, W]`` binary maps with the ``size`` x ``size`` ellipse.

    Each row of the ellipse is one run of columns, so the dilation is the union over rows of a horizontal
    running OR (a sparse table of power-of-two windows answers every run length with two lookups) shifted
    vertically: boolean passes over the map, where a convolution with the kernel costs ``size ** 2``
    multiply-adds per pixel (the refinement dilates every person's matte at full resolution three times).
    """
    if size <= 1:
        return binary.bool()
    k = ellipse_kernel(size)
    a = size // 2
    h, w = binary.shape[-2:]
    # Row r, column c of the input sits at r + a, c + a; table[p][.., j]: OR of 2^p columns from j.
    table = [F.pad(binary.bool(), (a, size - a, a, size - a))]
    out = None
    for i in range(size):
        cols = np.flatnonzero(k[i])
        if cols.size == 0:
            continue
        lo, length = int(cols[0]), int(cols[-1] - cols[0] + 1)  # columns x + lo - a .. of the input row
        p = length.bit_length() - 1
        while len(table) <= p:
            q, step = table[-1], 1 << (len(table) - 1)
            table.append(q[..., :-step] | q[..., step:])
        rows, second = table[p][..., i: i + h, :], lo + length - (1 << p)
        run = rows[..., lo: lo + w] | rows[..., second: second + w]
        out = run if out is None else out | run  # out[y] |= input row y + i - a (not in place: exportable)
    return out


def dilate_in_boxes(binary: torch.Tensor, size: int) -> torch.Tensor:
    """``dilate`` computed only inside each map's bounding box of set pixels grown by the kernel.

    The same result: outside that box the dilation is empty.  Where a person's uncertain band covers a few
    percent of a full-resolution frame, this spares the passes over the rest of the map (several people's
    maps are dilated three times a forward).  Not traceable (the boxes depend on the data): export and
    compilation take ``dilate``.
    """
    b = binary.bool()
    if size <= 1:
        return b
    rows, cols = any_along(b, -1), any_along(b, -2)  # [N, H], [N, W]
    h, w = b.shape[-2:]
    out = torch.zeros_like(b)
    for i in torch.nonzero(any_along(rows, -1)).flatten().tolist():
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        y0, y1 = max(int(ys[0]) - size, 0), min(int(ys[-1]) + size + 1, h)
        x0, x1 = max(int(xs[0]) - size, 0), min(int(xs[-1]) + size + 1, w)
        out[i, y0:y1, x0:x1] = dilate(b[i:i + 1, y0:y1, x0:x1], size)[0]
    return out


def _traced() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def uncertain(alpha: torch.Tensor, lower: float = 1.0 / 255.0, upper: float = 254.0 / 255.0) -> torch.Tensor:
    return (alpha > lower) & (alpha < upper)


def compute_unknown(
    alpha: torch.Tensor, k_size: int = 30, train: bool = False, generator: torch.Generator | None = None,
    boxes: bool = True,
) -> torch.Tensor:
    """Dilated uncertain region of each map of ``alpha [..., H, W]`` as float 0/1.

    Evaluation uses an ellipse of size ``k_size // 2``; training draws a size in
    ``[1, k_size - 1]`` per map (the reference's augmentation of the loss regions).  ``boxes``: evaluation
    dilates each map inside the box of its uncertain pixels (``dilate_in_boxes``; the same result).
    """
    shape = alpha.shape
    u = uncertain(alpha.detach()).reshape(-1, *shape[-2:])
    if not train:
        out = dilate(u, k_size // 2) if _traced() or not boxes else dilate_in_boxes(u, k_size // 2)
    else:
        sizes = torch.randint(1, k_size, (u.shape[0],), generator=generator).tolist()
        out = torch.stack([dilate(u[i:i + 1], s)[0] for i, s in enumerate(sizes)]) if sizes else u
    return out.reshape(shape).to(alpha.dtype)


def gaussian_smoothing_reference(x: torch.Tensor, sigma: int = 3) -> torch.Tensor:
    """The reference's box-suppression smoother, quirks included.

    Its 2-D kernel is the *squared* 1-D Gaussian repeated on every row (sum ~1.03 for
    sigma 3), and the output is cropped by the padding and resized back bilinearly.
    Reproduced as is because it decides which pixels the video model keeps.
    """
    size = sigma * 2 + 1
    pad = size // 2
    grid = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-grid ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g * g).expand(x.shape[1], 1, size, size).to(x)
    y = F.conv2d(F.pad(x, (pad, pad, pad, pad)), kernel, groups=x.shape[1])
    y = y[:, :, pad:-pad, pad:-pad]
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
