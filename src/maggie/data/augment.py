"""Training augmentations and guidance-mask synthesis (the reference's recipe, in numpy/cv2).

Everything draws from an explicit ``np.random.Generator`` so a sample is a pure function of
its seed (exact resume, any number of workers).  Arrays: image uint8 ``[T, H, W, 3]``, alphas
float32 ``[T, N, H, W]`` in [0, 1], masks uint8 ``[T, N, H, W]`` in {0, 1}.
"""

from __future__ import annotations

import cv2
import numpy as np

from maggie.data.mask_sources import apply_mask_source, simulate_tracker

Rng = np.random.Generator


def resize_short(image: np.ndarray, alphas: np.ndarray, short: int) -> tuple[np.ndarray, np.ndarray]:
    t, h, w = image.shape[:3]
    r = short / min(h, w)
    size = (max(1, int(w * r)), max(1, int(h * r)))
    img = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in image])
    al = np.stack([[cv2.resize(a, size, interpolation=cv2.INTER_LINEAR) for a in fr] for fr in alphas])
    return img, al


def random_crop(image, alphas, crop: tuple[int, int], padding_crop_p: float, rng: Rng):
    """Crop around the instances (bbox of mean alpha > 0.5), or with ``padding_crop_p`` pad to a
    square and resize the whole frame to the crop size, as the reference's RandomCropByAlpha."""
    ch, cw = crop
    t, h, w = image.shape[:3]
    if rng.random() < padding_crop_p:
        side = max(h, w)
        img = np.zeros((t, side, side, 3), np.uint8)
        al = np.zeros((t, alphas.shape[1], side, side), np.float32)
        img[:, :h, :w], al[..., :h, :w] = image, alphas
        img = np.stack([cv2.resize(f, (cw, ch), interpolation=cv2.INTER_LINEAR) for f in img])
        al = np.stack([[cv2.resize(a, (cw, ch), interpolation=cv2.INTER_LINEAR) for a in fr] for fr in al])
        return img, al
    if h < ch or w < cw:  # pad up to the crop size first
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        image = np.pad(image, ((0, 0), (0, ph), (0, pw), (0, 0)))
        alphas = np.pad(alphas, ((0, 0), (0, 0), (0, ph), (0, pw)))
        h, w = image.shape[1:3]
    fg = alphas.mean(axis=(0, 1)) > 0.5
    ys, xs = np.nonzero(fg)
    if len(ys):
        y0 = int(rng.integers(ys.min(), max(ys.max() - ch, ys.min()) + 1))
        x0 = int(rng.integers(xs.min(), max(xs.max() - cw, xs.min()) + 1))
    else:
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    y0, x0 = min(max(y0, 0), h - ch), min(max(x0, 0), w - cw)
    return image[:, y0:y0 + ch, x0:x0 + cw], alphas[..., y0:y0 + ch, x0:x0 + cw]


def photometric(image: np.ndarray, cfg, rng: Rng, video: bool = False) -> np.ndarray:
    """Gamma, motion blur (video), Gaussian noise and JPEG, shared by all frames of a clip."""
    img = image.astype(np.float32)
    if rng.random() < cfg.gamma_p:
        gamma = float(np.clip(rng.normal(1.0, 0.2), 0.5, 1.5))
        img = 255.0 * (img / 255.0) ** gamma
    if video and rng.random() < cfg.motion_p:
        k = int(rng.integers(3, 16)) | 1
        kernel = np.zeros((k, k), np.float32)
        cv2.line(kernel, (0, int(rng.integers(k))), (k - 1, int(rng.integers(k))), 1.0, 1)
        kernel /= max(kernel.sum(), 1.0)
        img = np.stack([cv2.filter2D(f, -1, kernel) for f in img])
    if rng.random() < cfg.add_noise_p:
        img = img + rng.normal(0, rng.uniform(0, 0.03 * 255), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.jpeg_p:
        q = int(rng.integers(20, 81))
        img = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)
                        for f in img])
    return img


def affine(image, alphas, rng: Rng):
    """Small rotation/shear/zoom about the centre.  The reference warped the image but not the
    masks; our masks are made from the warped alphas afterwards, so everything stays aligned."""
    t, h, w = image.shape[:3]
    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.95, 1.05)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    shear = np.tan(np.deg2rad(rng.uniform(-5, 5)))
    m[0, 1] += shear
    img = np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR) for f in image])
    al = np.stack([[cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR) for a in fr] for fr in alphas])
    return img, al


def binarized_mask(alpha: np.ndarray, max_kernel: int, rng: Rng) -> np.ndarray:
    """Threshold the alpha at a random level, then dilate/erode with random square kernels."""
    m = (alpha > rng.uniform(0.1, 0.95)).astype(np.uint8)
    kd, ke = (np.ones((int(rng.integers(1, max_kernel)),) * 2, np.uint8) for _ in range(2))
    op = int(rng.integers(4))
    if op == 0:
        m = cv2.erode(cv2.dilate(m, kd), ke)
    elif op == 1:
        m = cv2.dilate(cv2.erode(m, ke), kd)
    elif op == 2:
        m = cv2.dilate(m, kd)
    else:
        m = cv2.erode(m, ke)
    return m


def down_up(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    small = cv2.resize(mask.astype(np.float32), (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_LINEAR)
    return (cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)


def cut_mask(masks: np.ndarray, rng: Rng) -> np.ndarray:
    """Copy a rectangle of a mask elsewhere ("internal"), or swap one rectangle between two masks."""
    flat = masks.reshape(-1, *masks.shape[-2:]).copy()
    h, w = flat.shape[-2:]
    if rng.random() < 0.5:
        for i in range(flat.shape[0]):
            if rng.random() < 0.5:
                rh = int(rng.integers(h // 8, max(h // 4, h // 8 + 1)))
                rw = int(rng.integers(w // 8, max(w // 4, w // 8 + 1)))
                y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
                y1, x1 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
                flat[i, y1:y1 + rh, x1:x1 + rw] = flat[i, y0:y0 + rh, x0:x0 + rw].copy()
    elif flat.shape[0] >= 2 and rng.random() < 0.5:
        a, b = rng.choice(flat.shape[0], 2, replace=False)
        rh, rw = int(rng.integers(h // 8, max(h // 4, h // 8 + 1))), int(rng.integers(w // 8, max(w // 4, w // 8 + 1)))
        y0, x0 = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        patch = flat[a, y0:y0 + rh, x0:x0 + rw].copy()
        flat[a, y0:y0 + rh, x0:x0 + rw] = flat[b, y0:y0 + rh, x0:x0 + rw]
        flat[b, y0:y0 + rh, x0:x0 + rw] = patch
    return flat.reshape(masks.shape)


def mask_dropout(masks: np.ndarray, rng: Rng) -> np.ndarray:
    """Video: with p 0.5, a few maps lose a rectangle anchored at one of their foreground pixels."""
    flat = masks.reshape(-1, *masks.shape[-2:]).copy()
    if flat.shape[0] < 6 or rng.random() >= 0.5:
        return masks
    for i in rng.choice(flat.shape[0], int(rng.integers(1, flat.shape[0] // 2)), replace=False):
        ys, xs = np.nonzero(flat[i])
        if len(ys) == 0 or np.ptp(ys) < 16 or np.ptp(xs) < 16:
            continue
        k = int(rng.integers(len(ys)))
        rh = int(rng.integers(np.ptp(ys) // 16, np.ptp(ys) // 8 + 1))
        rw = int(rng.integers(np.ptp(xs) // 16, np.ptp(xs) // 8 + 1))
        flat[i, ys[k]:ys[k] + rh, xs[k]:xs[k] + rw] = 0
    return flat.reshape(masks.shape)


def sample_guidance_recipe(rng: Rng) -> dict:
    """A random segmenter-error recipe (``mask_sources`` keys): each error kind on or off, its size drawn.

    A continuous family, not the ten named test recipes: a coarse mask head of 14..56 cells, a
    loose box, a too large or too small mask, a wobbly boundary, holes, lost thin parts, spill
    onto neighbours and false blobs, each with its own probability.  Missed instances are left
    out: a slot with a true alpha and no guidance cannot be learned from.
    """
    r: dict = {"threshold": float(rng.uniform(0.3, 0.7))}
    if rng.random() < 0.8:
        r.update(coarse=int(rng.integers(14, 57)), box_jitter=float(rng.uniform(0.0, 0.04)))
    if rng.random() < 0.7:
        m = float(rng.uniform(-0.025, 0.015))
        r["morph"] = [m, m]
    if rng.random() < 0.7:
        j = float(rng.uniform(0.0, 0.016))
        r["jitter"] = [j, j]
    if rng.random() < 0.4:
        r.update(holes=[1, int(rng.integers(1, 4))], hole_size=[0.03, 0.1])
    if rng.random() < 0.3:
        r["open_thin"] = float(rng.uniform(0.01, 0.045))
    if rng.random() < 0.4:
        r.update(spill=[0.05, 0.2], spill_prob=float(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.35:
        r.update(false_blobs=[1, int(rng.integers(1, 4))], blob_size=[0.05, 0.14])
    if rng.random() < 0.15:
        r["merge_prob"] = float(rng.uniform(0.1, 0.5))
    return r


def simulated_guidance(alphas: np.ndarray, rng: Rng) -> np.ndarray:
    """Guidance ``[T, N, H, W]`` from a segmenter-error simulation, one recipe per sample.

    Frames of a clip share the recipe, each draws its own errors."""
    recipe = sample_guidance_recipe(rng)
    return np.stack([apply_mask_source(frame, recipe, rng) for frame in alphas]).astype(np.uint8)


def tracker_guidance(alphas: np.ndarray, rng: Rng) -> np.ndarray:
    """Guidance ``[T, N, H, W]`` of a drifting mask tracker started on the first frame, the kind of masks a
    video is matted with (and the video test sets' ``xmem`` masks are simulated as); its settings are drawn
    per clip around the test sets' tracker."""
    cfg = {"threshold": float(rng.uniform(0.3, 0.7)), "drift": float(rng.uniform(0.0, 0.004)),
           "boundary_growth": float(rng.uniform(0.0, 0.003)), "loss_prob": float(rng.uniform(0.0, 0.05)),
           "loss_frames": [1, 3]}
    return simulate_tracker(alphas, cfg, rng)


def guidance_masks(alphas: np.ndarray, cfg, rng: Rng, video: bool) -> np.ndarray:
    """Binary guidance per (frame, instance) made from the true alpha.

    Video clips take a tracker's masks with probability ``cfg.tracker_guidance_p`` (``tracker_guidance``).
    Otherwise, with probability ``cfg.simulated_guidance_p``, the errors of a simulated instance segmenter
    (``simulated_guidance``), else the reference's noise: a random threshold, random dilation/erosion, a
    1/8 down-up, and rectangles cut or swapped between masks.
    """
    # No draw at 0: the other streams stay as they were.
    if video and cfg.tracker_guidance_p > 0 and rng.random() < cfg.tracker_guidance_p:
        return tracker_guidance(alphas, rng)
    if rng.random() < cfg.simulated_guidance_p:
        masks = simulated_guidance(alphas, rng)
        return mask_dropout(masks, rng) if video else masks
    t, n = alphas.shape[:2]
    masks = np.zeros(alphas.shape, np.uint8)
    for f in range(t):
        for i in range(n):
            m = binarized_mask(alphas[f, i], cfg.binarized_kernel, rng)
            if rng.random() < cfg.downscale_mask_p:
                m = down_up(m)
            masks[f, i] = m
    masks = cut_mask(masks, rng)
    if video:
        masks = mask_dropout(masks, rng)
    return masks


def transition_maps(alphas: np.ndarray, rng: Rng) -> np.ndarray:
    """Video change maps: |alpha_t - alpha_t-1| > 5/255, dilated; frame 0 is all ones; the union
    over instances (the reference copies it into every slot)."""
    t, n, h, w = alphas.shape
    out = np.ones((t, h, w), np.float32)
    k = int(rng.integers(2, 5))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    iters = int(rng.integers(3, 7))
    for f in range(1, t):
        change = (np.abs(alphas[f] - alphas[f - 1]) > 5.0 / 255.0).any(0).astype(np.uint8)
        out[f] = cv2.dilate(change, kernel, iterations=iters)
    return out
