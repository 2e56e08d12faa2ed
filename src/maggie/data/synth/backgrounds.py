"""Procedural backgrounds (gradients, textures, clutter, simple scenes), optional bundled photographs,
and a slowly panning/zooming camera window for video backgrounds.

Photographs come from the image files that scikit-image ships inside ``skimage/data`` when that package is
importable; they are read straight from disk (no download is ever attempted) and are never required.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from maggie.data.synth.textures import TEXTURE_KINDS, random_colour, render_texture, sample_texture

log = logging.getLogger(__name__)

PROCEDURAL_KINDS = ("gradient", "texture", "clutter", "scene")
# Bundled scikit-image pictures without people (a person in the background would be an unlabelled instance).
PHOTO_NAMES = (
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "ihc",
    "retina",
    "brick",
    "grass",
    "gravel",
    "color",
    "motorcycle_left",
    "motorcycle_right",
)


def available_photos() -> list[Path]:
    """Paths of bundled scikit-image photographs, or [] when scikit-image is not installed."""
    try:
        import skimage.data  # noqa: F401  (optional dependency)
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    found = [
        p
        for name in PHOTO_NAMES
        for p in sorted(folder.glob(name + ".*"))
        if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    ]
    log.debug("found %d bundled photographs in %s", len(found), folder)
    return found


def _gradient(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    spec = sample_texture(rng, ["gradient"], (0.1, 0.7))
    out = render_texture(spec, shape, max(shape))
    if rng.random() < 0.5:  # radial vignette
        h, w = shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / max(h, w)
        out = out * (1.0 - 0.5 * np.clip(r, 0, 1))[..., None]
    return out


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    spec = sample_texture(rng, [k for k in TEXTURE_KINDS if k != "plain"], (0.1, 0.8))
    spec["period"] = float(rng.uniform(0.02, 0.2))
    out = render_texture(spec, shape, max(shape))
    overlay = render_texture(sample_texture(rng, ["noise"], (0.0, 0.5)), shape, max(shape) * 0.5)
    return 0.75 * out + 0.25 * overlay


def _clutter(rng: np.random.Generator, shape: tuple[int, int], base: np.ndarray | None = None) -> np.ndarray:
    """Many random shapes at two depths, the far ones blurred, over a gradient."""
    h, w = shape
    canvas = (_gradient(rng, shape) if base is None else base).copy()
    for depth in range(2):
        layer = canvas.copy()
        for _ in range(int(rng.integers(10, 30))):
            colour = tuple(float(c) for c in random_colour(rng, (0.1, 0.9), (0.1, 1.0)))
            kind = rng.integers(4)
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            size = int(rng.uniform(0.03, 0.25) * max(h, w)) + 2
            if kind == 0:
                cv2.rectangle(layer, (cx, cy), (cx + size, cy + int(size * rng.uniform(0.3, 2))), colour, -1)
            elif kind == 1:
                cv2.ellipse(
                    layer,
                    (cx, cy),
                    (size, int(size * rng.uniform(0.3, 1))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    colour,
                    -1,
                    cv2.LINE_AA,
                )
            elif kind == 2:
                end = (cx + int(rng.integers(-size, size)), cy + int(rng.integers(-size, size)))
                cv2.line(layer, (cx, cy), end, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
            else:
                pts = (np.array([cx, cy]) + rng.integers(-size, size, (int(rng.integers(3, 6)), 2))).astype(
                    np.int32
                )
                cv2.fillPoly(layer, [pts], colour, cv2.LINE_AA)
        if depth == 0:
            layer = cv2.GaussianBlur(layer, (0, 0), max(1.0, 0.01 * max(h, w)))
        canvas = layer
    return canvas


def _scene(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A crude outdoor/indoor scene: sky or wall, a floor plane in perspective, blocks, blur and grain."""
    h, w = shape
    horizon = int(rng.uniform(0.35, 0.7) * h)
    top = render_texture(
        {
            "kind": "gradient",
            "colours": [
                random_colour(rng, (0.1, 0.6), (0.6, 1.0)),
                random_colour(rng, (0.0, 0.4), (0.7, 1.0)),
            ],
            "period": 0.1,
            "angle": 90.0,
            "seed": 0,
        },
        shape,
        max(shape),
    )
    floor_spec = sample_texture(rng, ["checker", "stripes", "noise"], (0.05, 0.5))
    floor = render_texture(floor_spec, (h - horizon, w), max(shape) * 0.5)
    canvas = top.copy()
    canvas[horizon:] = floor * np.linspace(0.6, 1.0, h - horizon, dtype=np.float32)[:, None, None]
    for _ in range(int(rng.integers(3, 9))):
        bw, bh = int(rng.uniform(0.05, 0.3) * w), int(rng.uniform(0.1, 0.6) * h)
        x0 = int(rng.integers(-bw // 2, w))
        colour = tuple(float(c) for c in random_colour(rng, (0.0, 0.6), (0.2, 0.9)))
        cv2.rectangle(canvas, (x0, horizon - bh), (x0 + bw, horizon + 2), colour, -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), max(0.8, 0.004 * max(h, w)))
    grain = rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
    return (
        _clutter(rng, shape, canvas) * 0.3 + (canvas + grain) * 0.7 if rng.random() < 0.3 else canvas + grain
    )


def _photo(path: Path, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    image = image[..., ::-1].astype(np.float32) / 255.0
    h, w = shape
    zoom = max(h / image.shape[0], w / image.shape[1]) * rng.uniform(1.0, 1.4)
    resized = cv2.resize(
        image,
        (max(w, int(math.ceil(image.shape[1] * zoom))), max(h, int(math.ceil(image.shape[0] * zoom)))),
        interpolation=cv2.INTER_AREA,
    )
    y0 = int(rng.integers(0, resized.shape[0] - h + 1))
    x0 = int(rng.integers(0, resized.shape[1] - w + 1))
    out = resized[y0 : y0 + h, x0 : x0 + w]
    return out[:, ::-1] if rng.random() < 0.5 else out


def render_background(
    kind: str, rng: np.random.Generator, shape: tuple[int, int], photo: Path | None = None
) -> np.ndarray:
    """A background of ``kind`` (gradient, texture, clutter, scene, photo) as uint8 RGB [h, w, 3]."""
    if kind == "photo":
        if photo is None:
            raise ValueError("render_background: kind 'photo' needs a photo path")
        out = _photo(photo, rng, shape)
    elif kind == "gradient":
        out = _gradient(rng, shape) + rng.normal(0.0, 0.01, (*shape, 3)).astype(np.float32)
    elif kind == "texture":
        out = _texture(rng, shape)
    elif kind == "clutter":
        out = _clutter(rng, shape)
    elif kind == "scene":
        out = _scene(rng, shape)
    else:
        raise ValueError(
            f"render_background: unknown kind {kind!r}; expected one of {PROCEDURAL_KINDS + ('photo',)}"
        )
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def random_crop(
    background: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, int],
    zoom: tuple[float, float] = (0.6, 1.0),
) -> np.ndarray:
    """A random window of ``background`` with the aspect of ``shape``, resized to ``shape``; may flip."""
    bh, bw = background.shape[:2]
    h, w = shape
    fit = min(bh / h, bw / w)
    win = fit * rng.uniform(*zoom)
    wh, ww = max(2, int(round(h * win))), max(2, int(round(w * win)))
    y0 = int(rng.integers(0, bh - wh + 1))
    x0 = int(rng.integers(0, bw - ww + 1))
    crop = background[y0 : y0 + wh, x0 : x0 + ww]
    interp = cv2.INTER_AREA if wh > h else cv2.INTER_LINEAR
    out = cv2.resize(crop, (w, h), interpolation=interp)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def camera_path(
    rng: np.random.Generator,
    bg_shape: tuple[int, int],
    frame_shape: tuple[int, int],
    frames: int,
    pan: float = 0.01,
    zoom_rate: float = 0.005,
) -> np.ndarray:
    """Per-frame (x0, y0, z): a window of ``frame_shape * z`` whose corner moves slowly over the background.

    ``pan`` is the speed in fractions of the frame width per frame; the window bounces off the borders.
    """
    bh, bw = bg_shape
    h, w = frame_shape
    fit = min(bh / h, bw / w)
    z = fit * rng.uniform(0.6, 0.9)
    dz = rng.uniform(-zoom_rate, zoom_rate)
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.3, 1.0) * pan * w * z
    vx, vy = speed * math.cos(angle), speed * math.sin(angle) * 0.5
    x, y = rng.uniform(0, bw - w * z), rng.uniform(0, bh - h * z)
    path = []
    for _ in range(frames):
        zt = float(np.clip(z, 0.3 * fit, fit))
        x = float(np.clip(x, 0, bw - w * zt))
        y = float(np.clip(y, 0, bh - h * zt))
        path.append((x, y, zt))
        if not 0 <= x + vx <= bw - w * zt:
            vx = -vx
        if not 0 <= y + vy <= bh - h * zt:
            vy = -vy
        x, y, z = x + vx, y + vy, z * (1.0 + dz)
    return np.asarray(path, np.float64)


def camera_frame(background: np.ndarray, window: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """The frame seen through ``window`` = (x0, y0, z), sampled with sub-pixel accuracy."""
    x0, y0, z = (float(v) for v in window)
    h, w = frame_shape
    source = background
    if z > 1.5:  # pre-shrink to limit aliasing
        factor = 1.0 / z
        source = cv2.resize(background, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        x0, y0, z = x0 * factor, y0 * factor, 1.0
    matrix = np.array([[z, 0.0, x0], [0.0, z, y0]], np.float64)
    return cv2.warpAffine(
        source, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
