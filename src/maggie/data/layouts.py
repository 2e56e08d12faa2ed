"""The published MaGGIe dataset layouts (docs/DATASET.md of the reference) and a checker for them.

- image_train  ``I-HIM50K/images/<name>.jpg``, ``I-HIM50K/alphas/<name>/NN.png``
- image_test   ``HIM2K_M-HIM2K/images/<subset>/<name>.jpg``, ``.../alphas/<subset>/<name>/NN.png``,
               ``.../masks_matched_<source>/<subset>/<name>/NN.png``
- video_train  ``V-HIM2K5/fgr/<video>/<frame>.jpg``, ``V-HIM2K5/pha/<video>/<frame>/NN.png``
- video_test   ``V-HIM60/<split>/{fgr,pha,xmem}/...`` for split in comp_easy, comp_medium, comp_hard
"""

from __future__ import annotations

import os
from pathlib import Path

DATASET_DIRS = {
    "image_train": "I-HIM50K",
    "image_test": "HIM2K_M-HIM2K",
    "video_train": "V-HIM2K5",
    "video_test": "V-HIM60",
}
VIDEO_TEST_SPLITS = ("comp_easy", "comp_medium", "comp_hard")
MASK_PREFIX = "masks_matched_"


class LayoutError(FileNotFoundError):
    """A dataset folder does not follow its published layout."""


def instance_png(index: int) -> str:
    return f"{index:02d}.png"


def frame_name(index: int) -> str:
    return f"{index:05d}"


def list_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def list_files(folder: Path, suffix: str) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(suffix))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise LayoutError(message)


def _check_images(images: Path, alphas: Path, masks: list[Path]) -> dict:
    names = [n[:-4] for n in list_files(images, ".jpg")]
    _require(bool(names), f"{images}: no .jpg images")
    instances = 0
    for name in names:
        pngs = list_files(alphas / name, ".png")
        _require(bool(pngs), f"{alphas / name}: no instance mattes (*.png) for image {name}.jpg")
        instances += len(pngs)
        for mask_dir in masks:
            have = list_files(mask_dir / name, ".png")
            _require(have == pngs, f"{mask_dir / name}: masks {have} do not match the mattes {pngs}")
    return {"images": len(names), "instances": instances}


def _check_videos(split_dir: Path, with_masks: bool) -> dict:
    fgr, pha = split_dir / "fgr", split_dir / "pha"
    videos = list_dirs(pha)
    _require(bool(videos), f"{pha}: no videos")
    frames = 0
    for video in videos:
        names = [n[:-4] for n in list_files(fgr / video, ".jpg")]
        _require(bool(names), f"{fgr / video}: no .jpg frames")
        for name in names:
            pngs = list_files(pha / video / name, ".png")
            _require(bool(pngs), f"{pha / video / name}: no instance mattes for frame {name}.jpg")
            if with_masks:
                have = list_files(split_dir / "xmem" / video / name, ".png")
                _require(
                    have == pngs, f"{split_dir / 'xmem' / video / name}: masks {have} do not match {pngs}"
                )
        frames += len(names)
    return {"videos": len(videos), "frames": frames}


def verify_layout(kind: str, folder: str | Path) -> dict:
    """Check that ``folder`` holds dataset ``kind`` in its published layout; returns counts."""
    folder = Path(folder)
    if kind not in DATASET_DIRS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted(DATASET_DIRS)}")
    _require(folder.is_dir(), f"{folder}: dataset folder for {kind} not found")
    if kind == "image_train":
        return _check_images(folder / "images", folder / "alphas", [])
    if kind == "image_test":
        subsets = list_dirs(folder / "images")
        _require(bool(subsets), f"{folder / 'images'}: no subset folders")
        mask_dirs = [d for d in list_dirs(folder) if d.startswith(MASK_PREFIX)]
        _require(bool(mask_dirs), f"{folder}: no {MASK_PREFIX}<source> folders")
        summary = {"subsets": {}, "mask_sources": [d[len(MASK_PREFIX) :] for d in mask_dirs]}
        for subset in subsets:
            masks = [folder / d / subset for d in mask_dirs]
            summary["subsets"][subset] = _check_images(
                folder / "images" / subset, folder / "alphas" / subset, masks
            )
        return summary
    if kind == "video_train":
        return _check_videos(folder, with_masks=False)
    summary = {}
    for split in VIDEO_TEST_SPLITS:
        _require((folder / split).is_dir(), f"{folder / split}: split folder missing")
        summary[split] = _check_videos(folder / split, with_masks=True)
    return summary
