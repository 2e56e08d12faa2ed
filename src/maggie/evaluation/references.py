"""Reference methods that need no training, for the comparison tables.

* ``mask``: the guidance mask itself used as the alpha (every evaluation also reports it as
  ``mask_as_alpha``, so it is always in the tables).
* ``closed_form``: classical closed-form matting (Levin et al., via pymatting) of each
  instance on a trimap made from its mask: a band of ``band`` pixels on either side of the
  mask's boundary (erode/dilate) is unknown.  Instances are matted independently, then
  divided by their sum where it exceeds 1, so the mattes of one image sum to at most 1.

Both run at the input resolution on uint8 RGB, one frame at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

REFERENCES = ("mask", "closed_form")


def mask_alpha(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` guidance masks as mattes."""
    return (masks > 0.5).astype(np.float32)


def trimap_from_mask(mask: np.ndarray, band: int) -> np.ndarray:
    """0 background, 1 foreground, 0.5 within ``band`` px of the mask's boundary."""
    m = (mask > 0.5).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    fg = cv2.erode(m, k)
    grown = cv2.dilate(m, k)
    trimap = np.where(grown > 0, 0.5, 0.0)
    trimap[fg > 0] = 1.0
    return trimap


class MissingDependency(RuntimeError):
    """A reference method's package is not installed."""


def _pymatting():
    try:
        import pymatting
    except ImportError as exc:
        raise MissingDependency("the closed_form reference needs pymatting: pip install pymatting") from exc
    return pymatting


def closed_form_alpha(image: np.ndarray, masks: np.ndarray, band: int = 8) -> np.ndarray:
    """``image`` ``[H, W, 3]`` uint8, ``masks`` ``[N, H, W]`` -> ``[N, H, W]`` float32 mattes."""
    pm = _pymatting()
    rgb = image.astype(np.float64) / 255.0
    out = np.zeros(masks.shape, np.float32)
    for i, mask in enumerate(masks):
        trimap = trimap_from_mask(mask, band)
        if not (trimap == 1.0).any() or not (trimap == 0.0).any():
            out[i] = (mask > 0.5)  # nothing to solve: no sure foreground or no sure background
            continue
        if not (trimap == 0.5).any():
            out[i] = trimap
            continue
        out[i] = np.clip(pm.estimate_alpha_cf(rgb, trimap), 0.0, 1.0)
    total = out.sum(0, keepdims=True)
    return np.where(total > 1.0, out / np.maximum(total, 1e-6), out).astype(np.float32)


def reference_predictor(name: str, settings: dict | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``predict(image [H, W, 3] uint8, masks [N, H, W]) -> [N, H, W]`` for a reference method."""
    settings = settings or {}
    if name == "mask":
        return mask_alpha
    if name == "closed_form":
        band = int(settings.get("band", 8))
        _pymatting()  # fail early, with one line, if it is missing
        return lambda image, masks: closed_form_alpha(image, masks, band)
    raise ValueError(f"unknown reference method {name!r}; expected one of {REFERENCES}")
