"""A contact sheet per dataset: a few samples with instance mattes colour-coded (and, for test sets, every
mask source or the tracker masks side by side), read back from the written layout so it also works for
downloaded datasets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from maggie.data.layout import MASK_PREFIX, VIDEO_TEST_SPLITS, list_dirs, list_files
from maggie.drawing import colour_mattes as colourise
from maggie.files import encode_png, read_gray, read_rgb, write_bytes

TILE_H = 96
LABEL_H = 14


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, int(round(w * TILE_H / h)))
    body = cv2.resize(image, (width, TILE_H), interpolation=cv2.INTER_AREA)
    head = np.full((LABEL_H, width, 3), 32, np.uint8)
    cv2.putText(
        head,
        label[: max(1, width // 6)],
        (2, LABEL_H - 4),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.3,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return np.concatenate([head, body], 0)


def _row(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.zeros((tiles[0].shape[0], 2, 3), np.uint8)
    parts = []
    for tile in tiles:
        parts += [tile, gap]
    return np.concatenate(parts[:-1], 1)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(padded, 0)


def _maps(folder: Path) -> np.ndarray:
    pngs = list_files(folder, ".png")
    return (
        np.stack([read_gray(folder / p).astype(np.float32) / 255.0 for p in pngs])
        if pngs
        else np.zeros((0, 1, 1))
    )


def _image_rows(images: Path, alphas: Path, mask_dirs: list[Path], count: int, tag: str) -> list[np.ndarray]:
    rows = []
    for name in [n[:-4] for n in list_files(images, ".jpg")][:count]:
        tiles = [
            _tile(read_rgb(images / f"{name}.jpg"), f"{tag}{name}"),
            _tile(colourise(_maps(alphas / name)), "alpha"),
        ]
        for mask_dir in mask_dirs:
            tiles.append(_tile(colourise(_maps(mask_dir / name)), mask_dir.parent.name[len(MASK_PREFIX) :]))
        rows.append(_row(tiles))
    return rows


def _video_rows(split_dir: Path, count: int, with_masks: bool, tag: str) -> list[np.ndarray]:
    rows = []
    for video in list_dirs(split_dir / "pha")[:count]:
        frames = [n[:-4] for n in list_files(split_dir / "fgr" / video, ".jpg")]
        tiles = []
        for frame in sorted({frames[0], frames[len(frames) // 2], frames[-1]}):
            tiles.append(_tile(read_rgb(split_dir / "fgr" / video / f"{frame}.jpg"), f"{tag}{video}/{frame}"))
            tiles.append(_tile(colourise(_maps(split_dir / "pha" / video / frame)), "pha"))
            if with_masks:
                tiles.append(_tile(colourise(_maps(split_dir / "xmem" / video / frame)), "xmem"))
        rows.append(_row(tiles))
    return rows


def write_contact_sheet(
    kind: str, folder: str | Path, out_path: str | Path | None = None, count: int = 3
) -> Path:
    """Render the contact sheet of dataset ``kind`` stored in ``folder``; written atomically as PNG."""
    folder = Path(folder)
    out_path = Path(out_path) if out_path else folder / "contact_sheet.png"
    if kind == "image_train":
        single = _image_rows(folder / "images", folder / "alphas", [], count * 3, "")
        rows = [_row(single[i : i + 3]) for i in range(0, len(single), 3)]  # three samples per row
    elif kind == "image_test":
        rows = []
        mask_names = [d for d in list_dirs(folder) if d.startswith(MASK_PREFIX)]
        for subset in list_dirs(folder / "images"):
            rows += _image_rows(
                folder / "images" / subset,
                folder / "alphas" / subset,
                [folder / m / subset for m in mask_names],
                count,
                f"{subset}/",
            )
    elif kind == "video_train":
        rows = _video_rows(folder, count, False, "")
    elif kind == "video_test":
        rows = []
        for split in VIDEO_TEST_SPLITS:
            rows += _video_rows(folder / split, 1, True, f"{split}/")
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    if not rows:
        raise FileNotFoundError(f"{folder}: nothing to show in a contact sheet for {kind}")
    write_bytes(out_path, encode_png(_stack(rows)))
    return out_path
