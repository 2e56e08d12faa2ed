"""Compositing foreground layers over a background with a depth order, and the per-instance mattes.

With layers sorted back to front, the over operator gives the image

    I = sum_i a_i * prod_{j in front of i} (1 - a_j) * F_i  +  prod_j (1 - a_j) * B,

so the visible matte of instance i is a_i * prod_{j in front of i} (1 - a_j).  These mattes sum to
1 - prod_j (1 - a_j) <= 1 at every pixel, and they are exactly the weights of the foreground colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Layer:
    """A foreground placed on the canvas: ``anchor`` (layer pixels) lands on ``position`` after scaling."""

    rgb: np.ndarray  # [h, w, 3] straight colour, float in [0, 1] or uint8
    alpha: np.ndarray  # [h, w] float in [0, 1] or uint8
    position: tuple[float, float]  # canvas (x, y) of the anchor
    scale: float = 1.0
    anchor: tuple[float, float] = (0.0, 0.0)
    flip: bool = False  # mirror horizontally about the anchor


@dataclass
class CompositeResult:
    image: np.ndarray  # float32 [H, W, 3] in [0, 1]
    alphas: np.ndarray  # float32 [N, H, W] visible mattes, in the order of the input layers
    unoccluded: np.ndarray  # float32 [N, H, W] each layer's own alpha on the canvas


def _as_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.asarray(array, np.float32)


def place_layer(layer: Layer, canvas_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp a layer onto an empty canvas; returns premultiplied colour [H, W, 3] and alpha [H, W].

    Parts falling outside the canvas are cut off, so a figure can enter or leave the frame.
    """
    height, width = canvas_shape
    rgb, alpha = _as_unit_float(layer.rgb), _as_unit_float(layer.alpha)
    if rgb.shape[:2] != alpha.shape or rgb.ndim != 3:
        raise ValueError(f"place_layer: rgb {rgb.shape} and alpha {alpha.shape} do not match")
    if layer.scale <= 0:
        raise ValueError(f"place_layer: scale must be positive, got {layer.scale}")
    premult = rgb * alpha[..., None]
    ax, ay = layer.anchor
    scale = float(layer.scale)
    if scale < 0.75:  # shrink with area averaging first: bilinear warping alone would alias thin hair
        new_w = max(1, int(round(alpha.shape[1] * scale)))
        new_h = max(1, int(round(alpha.shape[0] * scale)))
        fx, fy = new_w / alpha.shape[1], new_h / alpha.shape[0]
        premult = cv2.resize(premult, (new_w, new_h), interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, (new_w, new_h), interpolation=cv2.INTER_AREA)
        ax, ay, scale = ax * fx, ay * fy, scale / ((fx + fy) / 2)
    sx = -scale if layer.flip else scale
    x, y = layer.position
    matrix = np.array([[sx, 0.0, x - sx * ax], [0.0, scale, y - scale * ay]], np.float64)
    flags = cv2.INTER_LINEAR
    premult = cv2.warpAffine(premult, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(alpha, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    alpha = np.clip(alpha, 0.0, 1.0)
    premult = np.minimum(np.clip(premult, 0.0, None), alpha[..., None])
    return premult, alpha


def composite_placed(
    background: np.ndarray,
    premults: Sequence[np.ndarray],
    alphas: Sequence[np.ndarray],
    depth_order: Sequence[int] | None = None,
) -> CompositeResult:
    """Over-composite already placed layers; ``depth_order`` lists layer indices from back to front."""
    bg = _as_unit_float(background)
    n = len(alphas)
    order = list(range(n)) if depth_order is None else [int(i) for i in depth_order]
    if sorted(order) != list(range(n)):
        raise ValueError(f"composite: depth_order {order} is not a permutation of 0..{n - 1}")
    height, width = bg.shape[:2]
    visible = np.zeros((n, height, width), np.float32)
    colour = np.zeros((height, width, 3), np.float32)
    transmission = np.ones((height, width), np.float32)
    for index in reversed(order):  # front to back: what is left to see through
        a = alphas[index]
        visible[index] = a * transmission
        colour += premults[index] * transmission[..., None]
        transmission *= 1.0 - a
    image = colour + bg * transmission[..., None]
    unoccluded = np.stack(alphas).astype(np.float32) if n else visible.copy()
    return CompositeResult(np.clip(image, 0.0, 1.0), visible, unoccluded)


def composite(
    background: np.ndarray, layers: Sequence[Layer], depth_order: Sequence[int] | None = None
) -> CompositeResult:
    """Place ``layers`` on ``background`` and composite them; mattes come back in the order of ``layers``."""
    shape = background.shape[:2]
    placed = [place_layer(layer, shape) for layer in layers]
    return composite_placed(background, [p for p, _ in placed], [a for _, a in placed], depth_order)


def quantize_mattes(alphas: np.ndarray) -> np.ndarray:
    """uint8 mattes [N, H, W] whose per-pixel sum never exceeds 255 (rounding each one alone could reach 256).

    The cumulative sums are rounded and differenced, so every matte is within 1 of its own rounding.
    """
    cumulative = np.rint(np.clip(np.cumsum(np.asarray(alphas, np.float32), axis=0), 0.0, 1.0) * 255.0)
    cumulative = np.maximum.accumulate(cumulative, axis=0)
    previous = np.concatenate([np.zeros_like(cumulative[:1]), cumulative[:-1]], axis=0)
    return (cumulative - previous).astype(np.uint8)
