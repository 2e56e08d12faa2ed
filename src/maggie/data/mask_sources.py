"""Simulated guidance masks: ten named recipes that imitate the errors of real instance-segmentation masks,
and a video tracker simulation (drift, accumulating boundary error, loss and recovery).

A recipe is a dict of optional parameters (they live in params.yaml).  Sizes are fractions of the
instance size s = sqrt(box_w * box_h) of the binarised true alpha, so a recipe behaves the same at any
resolution.  Ranges ``[lo, hi]`` are drawn uniformly per instance.  The steps, in order:

- ``threshold``: binarise the alpha (default 0.5);
- ``open_thin``: morphological opening of radius open_thin*s (drops hair, thin limbs);
- ``coarse``: resample the mask to coarse x coarse inside its box and back (a Mask R-CNN mask head),
  ``box_jitter`` perturbs that box (sd, fraction of the box side);
- ``morph``: dilate (> 0) or erode (< 0) by a radius drawn from the range;
- ``jitter``: smooth random warp of amplitude drawn from the range, correlation ``jitter_scale``;
- ``holes`` (count range) of ``hole_size`` (radius range);
- ``spill``: with ``spill_prob``, take the parts of neighbouring instances within the drawn radius;
- ``false_blobs`` (count range) of ``blob_size`` near the instance;
- ``merge_prob``: touching instances both get their union;  ``miss_prob``: the mask is all zeros.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

RECIPE_KEYS = frozenset(
    {
        "description",
        "threshold",
        "open_thin",
        "coarse",
        "box_jitter",
        "morph",
        "jitter",
        "jitter_scale",
        "holes",
        "hole_size",
        "spill",
        "spill_prob",
        "false_blobs",
        "blob_size",
        "merge_prob",
        "miss_prob",
    }
)

# Per frame: drift speed and boundary-error growth in fractions of the instance size, chance of losing the
# track; calibrated so the mean IoU falls from 1 on the first frame to about 0.77 on the tenth.
DEFAULT_TRACKER: dict = {
    "threshold": 0.5,
    "drift": 0.002,
    "boundary_growth": 0.0015,
    "loss_prob": 0.02,
    "loss_frames": [1, 3],
}


class RecipeError(ValueError):
    """A mask-source recipe or tracker config with unknown keys or malformed values."""


def validate_recipe(name: str, recipe: dict) -> None:
    """Reject unknown keys and malformed ranges with a one-line message naming the recipe."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"mask source {name!r}: recipe must be a mapping, got {type(recipe).__name__}")
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"mask source {name!r}: unknown keys {unknown}; allowed: {sorted(RECIPE_KEYS)}")
    for key in ("morph", "jitter", "holes", "hole_size", "spill", "false_blobs", "blob_size"):
        value = recipe.get(key)
        if value is not None and (
            not isinstance(value, (list, tuple)) or len(value) != 2 or value[0] > value[1]
        ):
            raise RecipeError(f"mask source {name!r}: {key} must be a range [lo, hi], got {value!r}")


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _size(mask: np.ndarray) -> float:
    _, _, w, h = cv2.boundingRect(mask)
    return math.sqrt(w * h)


def _draw(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(float(bounds[0]), float(bounds[1])))


def _coarse(mask: np.ndarray, grid: int, box_jitter: float, rng: np.random.Generator) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return mask
    H, W = mask.shape
    d = rng.normal(0.0, box_jitter, 4) * np.array([w, h, w, h]) if box_jitter else np.zeros(4)
    x0 = int(np.clip(round(x + d[0]), 0, W - 1))
    y0 = int(np.clip(round(y + d[1]), 0, H - 1))
    x1 = int(np.clip(round(x + w + d[2]), x0 + 1, W))
    y1 = int(np.clip(round(y + h + d[3]), y0 + 1, H))
    crop = mask[y0:y1, x0:x1].astype(np.float32)
    small = cv2.resize(crop, (grid, grid), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = up >= 0.5
    return out


def _morph(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilate (radius > 0) or erode (< 0) by a Euclidean distance, so fractional radii still count."""
    if abs(radius) < 0.5 or not mask.any():
        return mask
    if radius > 0:
        distance = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        return (distance <= radius).astype(np.uint8)
    distance = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (distance > -radius).astype(np.uint8)


def _jitter(mask: np.ndarray, amplitude: float, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Warp the mask by a smooth random displacement field (only around the instance, for speed)."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or amplitude < 0.25:
        return mask
    H, W = mask.shape
    pad = int(math.ceil(3 * amplitude)) + 2
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)
    rh, rw = y1 - y0, x1 - x0
    corr = max(2.0, correlation)
    gh, gw = int(math.ceil(rh / corr)) + 2, int(math.ceil(rw / corr)) + 2
    field = rng.normal(0.0, amplitude, (2, gh, gw)).astype(np.float32)
    dx = cv2.resize(field[0], (rw, rh), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(field[1], (rw, rh), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:rh, 0:rw].astype(np.float32)
    region = mask[y0:y1, x0:x1].astype(np.float32)
    warped = cv2.remap(region, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out = mask.copy()
    out[y0:y1, x0:x1] = warped >= 0.5
    return out


def _ellipses(
    mask: np.ndarray,
    count: int,
    radius_range,
    size: float,
    value: int,
    rng: np.random.Generator,
    centres: np.ndarray,
) -> None:
    """Draw ``count`` random ellipses of ``value`` centred at rows of ``centres`` picked at random."""
    for _ in range(count):
        if len(centres) == 0:
            return
        cy, cx = centres[int(rng.integers(len(centres)))]
        ax = max(1, int(round(_draw(rng, radius_range) * size)))
        ay = max(1, int(round(ax * rng.uniform(0.5, 1.5))))
        cv2.ellipse(mask, (int(cx), int(cy)), (ax, ay), float(rng.uniform(0, 180)), 0, 360, value, -1)


def _single(mask: np.ndarray, recipe: dict, rng: np.random.Generator) -> np.ndarray:
    """The per-instance steps (everything except spill, merge and miss)."""
    size = _size(mask)
    if size == 0:
        return mask
    if recipe.get("open_thin"):
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(recipe["open_thin"] * size))
    if recipe.get("coarse"):
        mask = _coarse(mask, int(recipe["coarse"]), float(recipe.get("box_jitter", 0.0)), rng)
    if recipe.get("morph"):
        mask = _morph(mask, _draw(rng, recipe["morph"]) * size)
    if recipe.get("jitter"):
        mask = _jitter(
            mask, _draw(rng, recipe["jitter"]) * size, recipe.get("jitter_scale", 0.15) * size, rng
        )
    if recipe.get("holes"):
        count = int(rng.integers(int(recipe["holes"][0]), int(recipe["holes"][1]) + 1))
        if count:
            _ellipses(mask, count, recipe.get("hole_size", [0.04, 0.1]), size, 0, rng, np.argwhere(mask > 0))
    return mask


def apply_mask_source(alphas: np.ndarray, recipe: dict, rng: np.random.Generator) -> np.ndarray:
    """Binary masks uint8 {0, 1} [N, H, W] made from the true alphas [N, H, W] (float in [0, 1])."""
    validate_recipe("<recipe>", recipe)
    alphas = np.asarray(alphas, np.float32)
    if alphas.ndim != 3:
        raise RecipeError(f"apply_mask_source: alphas must be [N, H, W], got shape {alphas.shape}")
    n, H, W = alphas.shape
    truth = (alphas >= float(recipe.get("threshold", 0.5))).astype(np.uint8)
    sizes = [_size(m) for m in truth]
    masks = np.stack([_single(m.copy(), recipe, rng) for m in truth]) if n else truth.copy()
    if recipe.get("spill") and n > 1:
        base = masks.copy()
        for i in range(n):
            if sizes[i] == 0 or rng.random() >= float(recipe.get("spill_prob", 1.0)):
                continue
            reach = cv2.dilate(base[i], _disk(_draw(rng, recipe["spill"]) * sizes[i]))
            others = np.delete(truth, i, axis=0).max(0)
            masks[i] |= reach & others
    if recipe.get("false_blobs"):
        for i in range(n):
            count = int(rng.integers(int(recipe["false_blobs"][0]), int(recipe["false_blobs"][1]) + 1))
            x, y, w, h = cv2.boundingRect(truth[i])
            if sizes[i] == 0 or count == 0:
                continue
            ys = rng.integers(max(0, y - h // 2), min(H, y + h + h // 2), 64)
            xs = rng.integers(max(0, x - w // 2), min(W, x + w + w // 2), 64)
            _ellipses(
                masks[i],
                count,
                recipe.get("blob_size", [0.05, 0.12]),
                sizes[i],
                1,
                rng,
                np.stack([ys, xs], 1),
            )
    if recipe.get("merge_prob") and n > 1:
        merged = masks.copy()
        grown = [cv2.dilate(t, _disk(0.05 * s)) if s else t for t, s in zip(truth, sizes, strict=True)]
        for i in range(n):
            for j in range(i + 1, n):
                if (grown[i] & grown[j]).any() and rng.random() < float(recipe["merge_prob"]):
                    union = merged[i] | merged[j]
                    merged[i], merged[j] = union, union.copy()
        masks = merged
    if recipe.get("miss_prob"):
        missed = rng.random(n) < float(recipe["miss_prob"])
        masks[missed] = 0
    return masks.astype(np.uint8)


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two binary maps; 1.0 when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def simulate_tracker(alphas: np.ndarray, cfg: dict, rng: np.random.Generator) -> np.ndarray:
    """Masks [T, N, H, W] uint8 {0, 1} of a mask-propagating tracker run from the first frame.

    An instance is initialised with its binarised alpha on the first frame where it is visible.  Later
    frames drift by an offset that grows every frame, their boundary error grows with the time since the
    last (re)initialisation, and with ``loss_prob`` per frame the track is lost for ``loss_frames`` frames,
    after which it recovers from the true mask of that frame.
    """
    unknown = sorted(set(cfg) - set(DEFAULT_TRACKER))
    if unknown:
        raise RecipeError(f"tracker config: unknown keys {unknown}; allowed: {sorted(DEFAULT_TRACKER)}")
    cfg = {**DEFAULT_TRACKER, **cfg}
    alphas = np.asarray(alphas, np.float32)
    if alphas.ndim != 4:
        raise RecipeError(f"simulate_tracker: alphas must be [T, N, H, W], got shape {alphas.shape}")
    frames, n, H, W = alphas.shape
    truth = (alphas >= float(cfg["threshold"])).astype(np.uint8)
    masks = np.zeros_like(truth)
    for i in range(n):
        started, lost_left, age = False, 0, 0
        offset = np.zeros(2)
        heading = rng.normal(size=2)
        heading /= np.linalg.norm(heading) + 1e-9
        for t in range(frames):
            current = truth[t, i]
            size = _size(current)
            if not started or lost_left == -1:  # (re)initialise on the true mask
                if size > 0:
                    masks[t, i] = current
                    started, lost_left, age, offset = True, 0, 0, np.zeros(2)
                continue
            if lost_left > 0:
                lost_left -= 1
                if lost_left == 0:
                    lost_left = -1  # recover on the next frame
                continue
            if rng.random() < float(cfg["loss_prob"]):
                lost_left = int(rng.integers(int(cfg["loss_frames"][0]), int(cfg["loss_frames"][1]) + 1)) - 1
                if lost_left == 0:
                    lost_left = -1
                continue
            age += 1
            if size == 0:
                continue
            offset = (
                offset + heading * float(cfg["drift"]) * size + rng.normal(0.0, 0.3 * cfg["drift"] * size, 2)
            )
            moved = cv2.warpAffine(
                current,
                np.array([[1.0, 0.0, offset[0]], [0.0, 1.0, offset[1]]]),
                (W, H),
                flags=cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
            )
            error = float(cfg["boundary_growth"]) * age * size
            moved = _jitter(moved, error, 0.15 * size, rng)
            masks[t, i] = _morph(moved, rng.uniform(-0.5, 0.5) * error)
    return masks
