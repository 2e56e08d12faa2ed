"""InstMatt's multi-instance refinement: all instances' tri-mattes rewritten together, window by window.

In a window, each instance's OS1 features are gated by its T, R and B mattes (a grouped
convolution per channel), then exchanged across the instances: an instance's T features are
compared with everyone else's T and with the R features, its R features gain the others' T
features, and the B features are averaged.  A small head predicts the window's new tri-mattes.
Windows are centred where the instances' T mattes and mean B matte do not add up to one.

Evaluation follows the authors' code, quirks included, so their checkpoint gives their mattes:
windows come from a 10-px grid with a greedy suppression, instances that duplicate another are
left as they are, a 10-px margin of each window is never written, and the "run until stable"
loop stops after its second pass (the reference compares against an alias of the updated
mattes from then on).  Training refines one window 1-3 times and returns every iteration; the
reference appended the same tensor each time, so only its last iteration was really trained.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.ops.blocks import to_alpha

MARGIN = 10  # px of each window edge that is computed but never written
GRID = 10  # px between candidate window centres
DUPLICATE_ON = 0.01  # a pixel belongs to an instance (duplicate test) above this T value


def window_size(instances: int, train: bool) -> int:
    if train:
        return 128
    return 320 if instances <= 8 else 256 if instances <= 14 else 128


def suppress(dets: np.ndarray, thresh: float, win: int) -> list[int]:
    """Greedy suppression of windows: drop those overlapping a better one by IoU > ``thresh``
    whose centre is also within half a window of its centre along both axes."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]  # numpy's default sort, so ties resolve as in the reference
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = iw * ih
        iou = inter / (areas[i] + areas[rest] - inter)
        near = (np.abs((x1[i] + x2[i]) / 2 - (x1[rest] + x2[rest]) / 2) < win // 2) & \
               (np.abs((y1[i] + y2[i]) / 2 - (y1[rest] + y2[rest]) / 2) < win // 2)
        order = rest[~((iou > thresh) & near)]
    return keep


def disagreement(pred: torch.Tensor) -> torch.Tensor:
    """|1 - sum of T - mean of B| over the instances of ``pred [K, 3, H, W]`` -> ``[1, 1, H, W]``."""
    return (1 - pred[:, 0:1].sum(dim=0, keepdim=True) - pred[:, 2:3].mean(dim=0, keepdim=True)).abs()


def windows(distance: torch.Tensor, win: int) -> np.ndarray:
    """Windows ``[M, 5]`` (x1, y1, x2, y2, score) over ``distance [1, 1, H, W]``, best first.

    Candidates sit on a 10-px grid, shifted to lie inside the image, scored by the distance at
    their centre; those above 0.01 go through ``suppress``; if none is, the best one is kept."""
    oh, ow = distance.shape[-2:]
    grid = F.interpolate(distance, scale_factor=1.0 / GRID, mode="nearest")[0, 0]
    gh, gw = grid.shape
    xx, yy = np.meshgrid(np.arange(gw), np.arange(gh))
    centres = np.stack([xx, yy], axis=2).reshape(-1, 2) * GRID
    boxes = np.tile(centres, (1, 2)) + np.array([-win // 2, -win // 2, win // 2, win // 2])
    for lo, hi, size in ((0, 2, ow), (1, 3, oh)):  # shift (not clip) into the image
        shift = -np.minimum(boxes[:, lo], 0) + np.minimum(size - boxes[:, lo], 0) \
                - np.minimum(boxes[:, hi], 0) + np.minimum(size - boxes[:, hi], 0)
        boxes[:, lo] += shift
        boxes[:, hi] += shift
    scores = grid.reshape(-1, 1).cpu().numpy()
    dets = np.concatenate([boxes, scores], axis=1)
    good = dets[scores[:, 0] > 0.01]
    if len(good) == 0:
        return dets[dets[:, -1].argsort()[::-1][:1]]
    return good[suppress(good, 0.3, win)]


def duplicates(t: torch.Tensor) -> torch.Tensor:
    """Instances ``t [K, 1, H, W]`` (T mattes) that the refiner leaves alone -> bool ``[K]``.

    Overlap of i and j = |Ti & Tj| / (min(|Ti|, |Tj|) + 1) (T > 0.01, at half size beyond 8
    instances).  An instance is a duplicate if it overlaps more than one other by > 0.3, or is
    the later of a pair overlapping by > 0.5."""
    if t.shape[0] > 8:
        t = F.interpolate(t, scale_factor=0.5)
    on = (t[:, 0] > DUPLICATE_ON).flatten(1).float()
    inter = on @ on.T
    area = on.sum(1)
    overlap = inter / (torch.minimum(area[:, None], area[None, :]) + 1.0)
    overlap.fill_diagonal_(0)
    bad = (overlap > 0.3).sum(1) > 1
    k = t.shape[0]
    for i in range(k):
        for j in range(i + 1, k):
            if overlap[i, j] > 0.5 or overlap[j, i] > 0.5:
                bad[i if overlap[i, j] > overlap[j, i] else j] = True
    return bad


class MultiInstRefiner(nn.Module):
    """Keys ``split``, ``merge.0``, ``merge.2``, ``head`` as the authors' ``MultiInstRefiner(32, 16)``."""

    def __init__(self, in_channels: int = 32, split_channels: int = 16):
        super().__init__()
        self.split = nn.Conv2d(in_channels * 3, split_channels * 3, 3, padding=1, groups=3)
        self.merge = nn.Sequential(nn.Conv2d(split_channels * 3 + 3, in_channels, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(in_channels, in_channels, 3, padding=1))
        self.head = nn.Conv2d(in_channels, 3, 3, padding=1)

    def window_pass(self, image: torch.Tensor, pred: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """New tri-mattes ``[K, 3, h, w]`` for one window of all K instances at once."""
        c, k = feat.shape[1], pred.shape[0]
        gated = self.split(feat.repeat(1, 3, 1, 1) * pred.repeat_interleave(c, dim=1))
        ft, fr, fb = gated.chunk(3, dim=1)
        sum_t = ft.sum(dim=0, keepdim=True)
        ft_x = fr.sum(dim=0, keepdim=True) / max(k - 1, 1) - sum_t + ft * 2
        fr_x = sum_t - ft + fr
        fb_x = fb.mean(dim=0, keepdim=True).expand_as(fb)
        return to_alpha(self.head(self.merge(torch.cat([ft_x, fr_x, fb_x, image], dim=1))))

    @torch.no_grad()
    def refine(self, image: torch.Tensor, pred: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Evaluation: ``image [K, 3, H, W]``, tri-mattes ``pred [K, 3, H, W]``, features ``[K, C, H, W]``."""
        k, _, h, w = pred.shape
        keep = (~duplicates(pred[:, 0:1])).nonzero(as_tuple=True)[0]
        win = min(window_size(k, train=False), h, w)
        boxes = windows(disagreement(pred), win).astype(np.int64)
        pred = pred.clone()
        active = torch.ones(k, dtype=torch.bool, device=pred.device)
        before = pred[:, 0].clone()
        for _ in range(2):  # the reference's loop ends after its second pass (see the module docstring)
            if len(keep):
                for x1, y1, x2, y2 in boxes[:, :4]:
                    out = self.window_pass(image[keep, :, y1:y2, x1:x2], pred[keep, :, y1:y2, x1:x2],
                                           feat[keep, :, y1:y2, x1:x2])
                    write = active[keep]
                    pred[keep[write], :, y1 + MARGIN:y2 - MARGIN, x1 + MARGIN:x2 - MARGIN] = \
                        out[write][:, :, MARGIN:out.shape[2] - MARGIN, MARGIN:out.shape[3] - MARGIN]
            active &= (pred[:, 0] - before).abs().flatten(1).amax(1) > 0.01
            before = pred[:, 0]  # an alias, as in the reference: the next pass sees no change and stops
            if not active.any():
                break
        return pred

    def refine_train(self, image: torch.Tensor, pred: torch.Tensor, feat: torch.Tensor, iterations: int
                     ) -> list[torch.Tensor]:
        """Training: the best 128-px window refined ``iterations`` times; each iteration's full tri-mattes."""
        _, _, h, w = pred.shape
        x1, y1, x2, y2 = windows(disagreement(pred.detach()), min(window_size(0, train=True), h, w))[0, :4].astype(int)
        outs = []
        for _ in range(iterations):
            out = self.window_pass(image[:, :, y1:y2, x1:x2], pred[:, :, y1:y2, x1:x2], feat[:, :, y1:y2, x1:x2])
            pred = pred.clone()
            pred[:, :, y1 + MARGIN:y2 - MARGIN, x1 + MARGIN:x2 - MARGIN] = \
                out[:, :, MARGIN:out.shape[2] - MARGIN, MARGIN:out.shape[3] - MARGIN]
            outs.append(pred)
        return outs
