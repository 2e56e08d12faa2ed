"""Deterministic colour textures (stripes, checks, dots, noise, gradients) shared by figures and backgrounds.

A texture is described by a small JSON-able dict so that a figure's ``meta.json`` can re-create its clothes
exactly at any resolution: sizes are fractions of a reference length (the figure height or the image side).
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

TEXTURE_KINDS = ("plain", "stripes", "checker", "dots", "noise", "gradient")


def random_colour(
    rng: np.random.Generator,
    saturation: tuple[float, float] = (0.2, 0.8),
    value: tuple[float, float] = (0.25, 0.95),
) -> list[float]:
    """An RGB colour in [0, 1] from a uniformly drawn hue and the given saturation/value ranges."""
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(*saturation)
    val = rng.uniform(*value)
    return [round(float(c), 4) for c in colorsys.hsv_to_rgb(hue, sat, val)]


def sample_texture(
    rng: np.random.Generator, kinds: list[str] | tuple[str, ...], saturation: tuple[float, float] = (0.2, 0.8)
) -> dict:
    """A texture spec: two colours, a kind, a period (fraction of the reference length), an angle, a seed."""
    kind = str(rng.choice(list(kinds)))
    first = random_colour(rng, saturation)
    second = random_colour(rng, saturation)
    return {
        "kind": kind,
        "colours": [first, second],
        "period": round(float(rng.uniform(0.03, 0.12)), 4),
        "angle": round(float(rng.uniform(0.0, 180.0)), 2),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def _smooth_noise(shape: tuple[int, int], cells: int, seed: int) -> np.ndarray:
    """Value noise in [0, 1]: a small random grid upsampled with bicubic interpolation."""
    h, w = shape
    noise_rng = np.random.default_rng(seed)
    grid_h = max(2, int(round(cells * h / max(h, w))) + 1)
    grid_w = max(2, int(round(cells * w / max(h, w))) + 1)
    grid = noise_rng.random((grid_h, grid_w), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(up, 0.0, 1.0)


def render_texture(spec: dict, shape: tuple[int, int], ref_len: float) -> np.ndarray:
    """Render ``spec`` as float32 RGB [h, w, 3] in [0, 1]; ``period`` is a fraction of ``ref_len``."""
    h, w = shape
    first = np.asarray(spec["colours"][0], np.float32)
    second = np.asarray(spec["colours"][1], np.float32)
    kind = spec["kind"]
    if kind == "plain":
        weight = 0.15 * _smooth_noise(shape, 6, spec["seed"])
    else:
        period = max(2.0, float(spec["period"]) * ref_len)
        theta = np.deg2rad(float(spec["angle"]))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        u = (xs * np.cos(theta) + ys * np.sin(theta)) / period
        v = (-xs * np.sin(theta) + ys * np.cos(theta)) / period
        if kind == "stripes":
            weight = np.clip(2.0 * np.sin(2 * np.pi * u) + 0.5, 0.0, 1.0)
        elif kind == "checker":
            weight = np.clip(4.0 * np.sin(np.pi * u) * np.sin(np.pi * v) + 0.5, 0.0, 1.0)
        elif kind == "dots":
            du = u - np.round(u)
            dv = v - np.round(v)
            weight = np.clip((0.3 - np.sqrt(du * du + dv * dv)) * 8.0 + 0.5, 0.0, 1.0)
        elif kind == "noise":
            cells = max(2, int(round(max(h, w) / period)))
            weight = _smooth_noise(shape, cells, spec["seed"])
        elif kind == "gradient":
            span = max(1.0, abs(np.cos(theta)) * w + abs(np.sin(theta)) * h)
            weight = (u * period - (u * period).min()) / span
        else:
            raise ValueError(f"texture: unknown kind {kind!r}; expected one of {TEXTURE_KINDS}")
        weight = weight.astype(np.float32)
    return first + (second - first) * weight[..., None]
