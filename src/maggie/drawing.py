"""Pictures people look at: colour-coded instance mattes, overlays, labelled tiles and grids.

One palette for everything (contact sheets, previews, reports, ``maggie predict`` overlays).
"""

from __future__ import annotations

import cv2
import numpy as np

PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
], dtype=np.float32)


def colour_mattes(alphas: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` mattes in [0, 1] -> uint8 RGB, instance i painted with palette colour i."""
    if len(alphas) == 0:
        return np.zeros((*alphas.shape[1:], 3), np.uint8)
    colours = PALETTE[np.arange(len(alphas)) % len(PALETTE)]
    out = np.einsum("nhw,nc->hwc", alphas.astype(np.float32), colours)
    return np.clip(out, 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, alphas: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """Image with each instance tinted by its matte."""
    tint = colour_mattes(alphas).astype(np.float32)
    cover = np.clip(alphas.sum(0), 0, 1)[:, :, None] * strength
    return np.clip(image.astype(np.float32) * (1 - cover) + tint * cover, 0, 255).astype(np.uint8)


def label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 8 + 7 * len(text)), 16), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def grid(rows: list[list[np.ndarray]], tile_height: int = 160) -> np.ndarray:
    """Stack rows of RGB tiles (resized to a common height) into one image."""
    out_rows = []
    for row in rows:
        tiles = []
        for t in row:
            t = t if t.ndim == 3 else np.repeat(t[:, :, None], 3, axis=2)
            scale = tile_height / t.shape[0]
            tiles.append(cv2.resize(t, (max(1, int(t.shape[1] * scale)), tile_height), interpolation=cv2.INTER_AREA))
        out_rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in out_rows)
    out_rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in out_rows]
    return np.concatenate(out_rows, axis=0)
