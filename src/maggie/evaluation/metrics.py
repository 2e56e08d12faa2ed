"""Matting metrics with the MaGGIe reference's definitions and reporting scales.

The numbers the paper publishes come from the authors' ``maggie/utils/metric.py``, whose scales
and details are not the textbook ones.  To keep our numbers comparable we reproduce them, quirks
included; every quirk that changes a number is marked ``QUIRK`` below.

Conventions shared by all metrics (as in the reference):

* inputs are mattes ``[T, N, H, W]`` (frames x instances) in [0, 1]; spatial metrics see them as
  ``T * N`` maps of ``H x W``;
* each metric keeps a running ``(score, count)``, the count being instance maps (spatial metrics)
  or instances (temporal metrics), and reports ``score / (count + 1e-6)``: an average over maps;
* the region is the whole image, except for ``MAD_fg`` / ``MAD_bg`` / ``MAD_unk``, which use the
  trimap's foreground (2), background (0) and unknown band (1).  As in the reference's test loop,
  the trimap never restricts the other metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.nn import functional as F

log = logging.getLogger("maggie.metrics")

SPATIAL = ("MAD", "MSE", "SAD", "Grad", "Conn")
TEMPORAL = ("dtSSD", "MESSDdt")
REGION_LABELS = {"MAD_fg": 2, "MAD_bg": 0, "MAD_unk": 1}
METRIC_NAMES = (*SPATIAL, *TEMPORAL, *REGION_LABELS)


class MetricInputError(ValueError):
    """Mattes, trimap or metric names that the metrics cannot score."""


# --------------------------------------------------------------------------------------------- trimap

def make_trimap(alpha: np.ndarray, kernel_size: int = 25) -> np.ndarray:
    """The evaluation trimap the reference builds from the true alpha: 2 where alpha > 0.5, then 1
    wherever an elliptical ``kernel_size`` dilation and erosion of alpha differ (this band overrides
    the foreground), else 0.

    ``alpha`` is float in [0, 1] or uint8 in [0, 255] (divided by 255, as the reference's loaders
    do), of shape ``[..., H, W]``; the trimap is uint8 of the same shape.
    """
    alpha = np.asarray(alpha)
    if alpha.ndim < 2 or alpha.shape[-2] == 0 or alpha.shape[-1] == 0:
        raise MetricInputError(f"make_trimap: alpha must be [..., H, W] with H, W > 0, got {alpha.shape}")
    if kernel_size < 1:
        raise MetricInputError(f"make_trimap: kernel_size must be >= 1, got {kernel_size}")
    a = alpha.astype(np.float32) / 255.0 if alpha.dtype == np.uint8 else alpha.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    maps = a.reshape(-1, *a.shape[-2:])
    trimap = np.zeros(maps.shape, np.uint8)
    for out, m in zip(trimap, maps, strict=True):
        # cv2's default border ignores outside pixels, so the image edge is not a transition.
        band = (cv2.dilate(m, kernel) - cv2.erode(m, kernel)) > 0
        out[m > 0.5] = 2
        out[band] = 1
    return trimap.reshape(a.shape)


# ----------------------------------------------------------------------------- spatial metrics on maps
# Each takes float32 maps pred, gt, mask of shape [M, H, W] and returns (score, count).

def _mad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    # QUIRK: the per-map mean over all H*W pixels is divided once more by the region size, then
    # scaled by 1e10.  With a full mask this is 1e10 * sum|p - g| / (H W)^2, which depends on the
    # resolution and is not the usual 1e3 * mean.  A map whose region is empty scores 0 but counts.
    per_map = (np.abs(pred - gt) * mask).mean(axis=(1, 2)) / (mask.sum(axis=(1, 2)) + 1e-6)
    return float(per_map.sum()) * 1e10, mask.shape[0]


def _mse(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    # QUIRK: same double normalisation and 1e10 scale as MAD, with squared errors.
    per_map = (np.square(pred - gt) * mask).mean(axis=(1, 2)) / (mask.sum(axis=(1, 2)) + 1e-6)
    return float(per_map.sum()) * 1e10, mask.shape[0]


def _sad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    return float((np.abs(pred - gt) * mask).sum(dtype=np.float64)) * 1e-3, mask.shape[0]


def _gaussian_derivative_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[torch.Tensor, ...]:
    """First-derivative-of-Gaussian filters (9x9 for sigma 1.4), unit L2 norm; y is x transposed."""
    half = np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon)))
    r = np.arange(-half, half + 1)
    gauss = np.exp(-(r**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dgauss = -r * gauss / sigma**2
    fx = gauss[:, None] * dgauss[None, :]  # rows: Gaussian, columns: its derivative
    fx = fx / np.sqrt((fx**2).sum())
    tx = torch.tensor(fx, dtype=torch.float32)[None, None]
    return tx, tx.transpose(-1, -2).contiguous()


_FILTER_X, _FILTER_Y = _gaussian_derivative_filters()


def _grad(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, device: torch.device) -> tuple[float, int]:
    # QUIRK: prediction and truth are each min-max normalised over the whole batch of maps handed to
    # one update (not per map), with +1e-6 in the denominator, so a constant map becomes all zeros.
    # QUIRK: the convolution zero-pads (the classic Grad replicates the border), so a matte that
    # touches the image edge has a gradient there.
    fx, fy = _FILTER_X.to(device), _FILTER_Y.to(device)
    pad = fx.shape[-1] // 2

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        x = (x - x.min()) / (x.max() - x.min() + 1e-6)
        return torch.sqrt(F.conv2d(x, fx, padding=pad) ** 2 + F.conv2d(x, fy, padding=pad) ** 2)

    p = torch.from_numpy(pred).to(device)[:, None]
    g = torch.from_numpy(gt).to(device)[:, None]
    m = torch.from_numpy(mask).to(device)[:, None]
    err = (((magnitude(g) - magnitude(p)) ** 2) * m).sum().item()
    return err * 1e-3, mask.shape[0]


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a 0/1 uint8 map (bool mask; all False if there is none).

    Equal sizes go to the component met first in raster order, as with the reference's labelling
    (skimage numbers components in raster order and argmax takes the first)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=4, ltype=cv2.CV_32S)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = np.flatnonzero(areas == areas.max()) + 1
    label = best[0]
    if len(best) > 1:
        flat = labels.ravel()
        label = flat[np.flatnonzero(np.isin(flat, best))[0]]
    return labels == label


_CONN_STEPS = np.arange(0, 1 + 0.1, 0.1)  # 0, 0.1, ..., 1.0 in float64, as the reference builds them


def _conn(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    total = 0.0
    for p, g, m in zip(pred, gt, mask, strict=True):
        level = np.full(g.shape, -1.0, np.float32)  # -1: not yet assigned
        for i in range(1, len(_CONN_STEPS)):
            # float32 mattes against float64 thresholds compare in float64 (NumPy 2 promotion).
            omega = _largest_component(((g >= _CONN_STEPS[i]) & (p >= _CONN_STEPS[i])).astype(np.uint8))
            level[(level == -1) & ~omega] = _CONN_STEPS[i - 1]
        level[level == -1] = 1
        g_diff, p_diff = g - level, p - level
        g_phi = 1 - g_diff * (g_diff >= np.float32(0.15))
        p_phi = 1 - p_diff * (p_diff >= np.float32(0.15))
        total += float((np.abs(g_phi - p_phi) * m).sum(dtype=np.float64))
    return total * 1e-3, mask.shape[0]


# ---------------------------------------------------------------------------- temporal metrics on clips
# Each takes float32 clips pred, gt, mask of shape [T, N, H, W] (T >= 2) and returns (score, count).

def _dtssd(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    # Per instance: 0.1 * sqrt(sum over frame pairs and pixels of (dp/dt - dg/dt)^2), mask of the
    # earlier frame; count = instances.  QUIRK: the square root is taken over all pairs of the clip
    # at once, so a T-frame update is not the mean of its T-1 pairs; the textbook per-pair average
    # is what you get by calling update once per consecutive pair.
    d = (pred[1:] - pred[:-1]) - (gt[1:] - gt[:-1])
    per_instance = np.sqrt((np.square(d) * mask[:-1]).sum(axis=(0, 2, 3), dtype=np.float64))
    return float(per_instance.sum()) * 0.1, pred.shape[1]


def _farneback(prev: np.ndarray, curr: np.ndarray) -> np.ndarray:
    # pyr_scale 0.5, levels 5, winsize 10, iterations 2, poly_n 7, poly_sigma 1.5, as the reference
    return cv2.calcOpticalFlowFarneback(prev, curr, None, 0.5, 5, 10, 2, 7, 1.5,
                                        cv2.OPTFLOW_FARNEBACK_GAUSSIAN)


def _messddt_instance(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, per_pair_warp: bool) -> float:
    """One instance, arrays [T, H, W]: sum_t |e_t - warp(e_t+1)| / sum_t (sum m_t + 1), where
    e = (p - g)^2 * m and the warp follows Farneback flow t -> t+1 computed on the truth."""
    t, h, w = gt.shape
    g255 = (gt * 255).astype(np.uint8)  # truncation, not rounding, as in the reference
    flow = np.stack([_farneback(g255[k], g255[k + 1]) for k in range(t - 1)])
    flow = np.rint(flow).astype(np.int64)  # [T-1, H, W, (dx, dy)]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # QUIRK: the reference swaps the axes: the warped value at (row, col) is read from row
    # (col + dx) and column (row + dy), each clamped to the image; even a zero flow transposes.
    src = np.clip(cols + flow[..., 0], 0, h - 1) * w + np.clip(rows + flow[..., 1], 0, w - 1)
    err = np.square(pred - gt) * mask
    nxt = err[1:].reshape(t - 1, -1)
    if per_pair_warp:
        warped = np.take_along_axis(nxt, src.reshape(t - 1, -1), axis=1)
    else:
        # QUIRK (a bug in the reference): its torch.take indexes the flattened stack of the T-1
        # "next" frames with indices below H*W, so every pair reads frame 1.  Only clips with more
        # than one pair are affected; kept by default because the authors' numbers include it.
        warped = nxt[0][src.reshape(t - 1, -1)]
    total = np.abs(err[:-1].reshape(t - 1, -1) - warped).sum(dtype=np.float64)
    return float(total / (mask[:-1].sum(dtype=np.float64) + (t - 1)))


def _messddt(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, per_pair_warp: bool) -> tuple[float, int]:
    # Scaled by 1e4 per instance; count = instances scored.  Like the reference, an instance whose
    # optical flow fails is skipped (logged) rather than failing the whole evaluation.
    score, count = 0.0, 0
    for i in range(gt.shape[1]):
        try:
            score += _messddt_instance(pred[:, i], gt[:, i], mask[:, i], per_pair_warp) * 1e4
        except cv2.error as exc:
            log.warning("MESSDdt: optical flow failed for instance %d, skipped: %s", i, str(exc).strip())
            continue
        count += 1
    return score, count


# ------------------------------------------------------------------------------------------ accumulator

def _as_mattes(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise MetricInputError(f"{what}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim != 4:
        raise MetricInputError(f"{what}: expected a 4-D [T, N, H, W] array, got shape {x.shape}")
    if x.size == 0:
        raise MetricInputError(f"{what}: empty array of shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
        raise MetricInputError(f"{what}: values must lie in [0, 1], got range [{lo}, {hi}]")
    return x


class MetricAccumulator:
    """Running (score, count) of the named metrics over images or video clips.

    ``per_pair_warp=True`` makes MESSDdt warp each frame pair's own next frame instead of
    reproducing the reference's first-pair bug (identical when each update holds one pair).
    ``device`` is where Grad's convolutions run.
    """

    def __init__(self, names: Sequence[str], *, per_pair_warp: bool = False,
                 device: str | torch.device = "cpu") -> None:
        if isinstance(names, str):
            names = [names]
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown or not names:
            raise MetricInputError(f"unknown or no metrics {unknown}; supported: {', '.join(METRIC_NAMES)}")
        self.names = tuple(dict.fromkeys(names))
        self.per_pair_warp = per_pair_warp
        self.device = torch.device(device)
        self.sums: dict[str, list[float]] = {n: [0.0, 0.0] for n in self.names}

    def update(self, pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None = None) -> None:
        """Score one image (T = 1) or clip: pred and gt float ``[T, N, H, W]`` in [0, 1].

        ``trimap`` (0/1/2, same shape) is used by the region metrics only; when they are asked for
        and it is missing it is built from ``gt`` with :func:`make_trimap`, as the reference does.
        Temporal metrics need T >= 2 and are skipped otherwise (the reference scores them only once
        a previous frame exists)."""
        pred = _as_mattes(pred, "prediction")
        gt = _as_mattes(gt, "ground truth")
        if pred.shape != gt.shape:
            raise MetricInputError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        regions = [n for n in self.names if n in REGION_LABELS]
        if trimap is not None:
            trimap = np.asarray(trimap)
            if trimap.shape != gt.shape:
                raise MetricInputError(f"trimap shape {trimap.shape} differs from ground truth {gt.shape}")
            if not np.isin(trimap, (0, 1, 2)).all():
                raise MetricInputError("trimap: values must be 0 (background), 1 (unknown) or 2 (foreground)")
        elif regions:
            trimap = make_trimap(gt)

        spatial_args = [x.reshape(-1, *x.shape[-2:]) for x in (pred, gt)]
        ones: np.ndarray | None = None
        for name in self.names:
            if name in TEMPORAL and gt.shape[0] < 2:
                continue
            if ones is None and name not in REGION_LABELS:
                ones = np.ones_like(gt)
            if name in REGION_LABELS:
                region = (trimap == REGION_LABELS[name]).astype(np.float32)
                score, count = _mad(*spatial_args, region.reshape(-1, *gt.shape[-2:]))
            elif name == "dtSSD":
                score, count = _dtssd(pred, gt, ones)
            elif name == "MESSDdt":
                score, count = _messddt(pred, gt, ones, self.per_pair_warp)
            elif name == "Grad":
                score, count = _grad(*spatial_args, ones.reshape(-1, *gt.shape[-2:]), self.device)
            else:
                fn = {"MAD": _mad, "MSE": _mse, "SAD": _sad, "Conn": _conn}[name]
                score, count = fn(*spatial_args, ones.reshape(-1, *gt.shape[-2:]))
            self.sums[name][0] += score
            self.sums[name][1] += count

    def add_state(self, state: Mapping[str, tuple[float, float]]) -> None:
        """Fold another accumulator's ``state()`` into this one (only the names this one tracks)."""
        for name, (score, count) in state.items():
            if name in self.sums:
                self.sums[name][0] += float(score)
                self.sums[name][1] += float(count)

    def state(self) -> dict[str, tuple[float, float]]:
        """(score, count) per metric: shards' states add up to the state of the whole."""
        return {n: (s, c) for n, (s, c) in self.sums.items()}

    def average(self) -> dict[str, float]:
        """score / (count + 1e-6) per metric, as the reference reports (0 when nothing was scored)."""
        return {n: s / (c + 1e-6) for n, (s, c) in self.sums.items()}

    @classmethod
    def merge(cls, states: Iterable[Mapping[str, tuple[float, float]]]) -> dict[str, float]:
        """Averages over several shards' ``state()`` (e.g. one per process)."""
        states = list(states)
        if not states:
            raise MetricInputError("merge: no metric states given")
        names = list(states[0])
        if any(set(s) != set(names) for s in states[1:]):
            raise MetricInputError("merge: the states track different metrics")
        total = {n: (sum(float(s[n][0]) for s in states), sum(float(s[n][1]) for s in states)) for n in names}
        return {n: score / (count + 1e-6) for n, (score, count) in total.items()}


def compute_metrics(pred: np.ndarray, gt: np.ndarray, names: Sequence[str],
                    trimap: np.ndarray | None = None) -> dict[str, float]:
    """One update then the averages: the reference's ``update(pred, gt); average()`` per metric."""
    acc = MetricAccumulator(names)
    acc.update(pred, gt, trimap)
    return acc.average()
