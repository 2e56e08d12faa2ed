"""The published MaGGIe dataset layouts (docs/DATASET.md of the reference): names, a checker, readers.

- image_train  ``I-HIM50K/images/<name>.jpg``, ``I-HIM50K/alphas/<name>/NN.png``
- image_test   ``HIM2K_M-HIM2K/images/<subset>/<name>.jpg``, ``.../alphas/<subset>/<name>/NN.png``,
               ``.../masks_matched_<source>/<subset>/<name>/NN.png``
- video_train  ``V-HIM2K5/fgr/<video>/<frame>.jpg``, ``V-HIM2K5/pha/<video>/<frame>/NN.png``
- video_test   ``V-HIM60/<split>/{fgr,pha,xmem}/...`` for split in comp_easy, comp_medium, comp_hard

The test-set readers (HIM2K/M-HIM2K images, V-HIM60 videos) return arrays at the files' own
resolution (uint8 RGB images, float32 mattes in [0, 1], binary masks), one sample at a time,
and report bad data as a single line that names the file and the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maggie.files import DataError, read_gray, read_rgb

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _stems(folder: Path, exts=IMAGE_EXTS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts) if folder.is_dir() else []


def read_instances(folder: Path, shape: tuple[int, int], what: str) -> tuple[list[str], np.ndarray]:
    files = _stems(folder, (".png",))
    if not files:
        raise DataError(f"{folder}: no {what} PNGs")
    arrs = []
    for f in files:
        a = read_gray(f)
        if a.shape != shape:
            raise DataError(f"{f}: {what} is {a.shape[1]}x{a.shape[0]}, the image is {shape[1]}x{shape[0]}")
        arrs.append(a)
    return [f.name for f in files], np.stack(arrs)


class ImageTestSet:
    """``<root>/<dir>/images/<subset>/*.jpg``, ``alphas/<subset>/<img>/NN.png``,
    ``masks_matched_<source>/<subset>/<img>/NN.png`` (the HIM2K + M-HIM2K layout)."""

    def __init__(self, root: str | Path, dirname: str, subset: str, source: str):
        self.base = Path(root) / dirname
        self.subset, self.source = subset, source
        self.image_dir = self.base / "images" / subset
        self.alpha_dir = self.base / "alphas" / subset
        self.mask_dir = self.base / f"masks_matched_{source}" / subset
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: no such image folder (subset '{subset}')")
        if not self.mask_dir.is_dir():
            raise DataError(f"{self.mask_dir}: no such mask folder (source '{source}')")
        # As the reference: an image is evaluated when its mask folder exists.
        self.images = {p.stem: p for p in _stems(self.image_dir)}
        self.names = sorted(n for n in self.images if (self.mask_dir / n).is_dir())
        if not self.names:
            raise DataError(f"{self.mask_dir}: no image has masks here")

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image uint8 [H, W, 3], alphas float32 [n, H, W], masks uint8 {0,1} [n, H, W] (matched by file name)."""
        image = read_rgb(self.images[name])
        shape = image.shape[:2]
        mask_names, masks = read_instances(self.mask_dir / name, shape, "mask")
        alphas = []
        for m in mask_names:
            path = self.alpha_dir / name / m
            if not path.exists():
                raise DataError(f"{path}: missing alpha for mask {self.mask_dir / name / m}")
            a = read_gray(path)
            if a.shape != shape:
                raise DataError(f"{path}: alpha is {a.shape[1]}x{a.shape[0]}, the image is {shape[1]}x{shape[0]}")
            alphas.append(a)
        return image, np.stack(alphas).astype(np.float32) / 255.0, (masks > 127).astype(np.uint8)


@dataclass
class Frame:
    name: str
    image: np.ndarray
    alphas: np.ndarray
    masks: np.ndarray
    people: tuple[str, ...] = ()   # the instances' file names (``NN.png``), in the order of alphas and masks


class VideoTestSet:
    """``<root>/<dir>/<split>/fgr/<video>/<frame>.jpg``, ``pha/<video>/<frame>/NN.png``,
    ``<mask_dir>/<video>/<frame>/NN.png`` (the V-HIM60 layout)."""

    def __init__(self, root: str | Path, dirname: str, split: str, mask_dir: str = "xmem",
                 mask_root: str | Path | None = None):
        """``mask_root``: read the guidance from ``<mask_root>/<video>/<frame>/NN.png`` instead (masks made
        elsewhere, e.g. by the flow tracker of ``maggie masks``)."""
        self.base = Path(root) / dirname / split
        self.mask_base = Path(mask_root) if mask_root is not None else self.base / mask_dir
        if not (self.base / "fgr").is_dir():
            raise DataError(f"{self.base / 'fgr'}: no such video folder (split '{split}')")
        self.videos = sorted(p.name for p in (self.base / "pha").iterdir() if p.is_dir()) \
            if (self.base / "pha").is_dir() else []
        if not self.videos:
            raise DataError(f"{self.base / 'pha'}: no videos with alpha mattes")

    def frames(self, video: str) -> list[Frame]:
        out = []
        for img_path in _stems(self.base / "fgr" / video):
            image = read_rgb(img_path)
            shape = image.shape[:2]
            stem = img_path.stem
            names, alphas = read_instances(self.base / "pha" / video / stem, shape, "alpha")
            mask_folder = self.mask_base / video / stem
            masks = np.zeros_like(alphas)
            if mask_folder.is_dir():
                for i, n in enumerate(names):
                    if (mask_folder / n).exists():
                        m = read_gray(mask_folder / n)
                        if m.shape != shape:
                            raise DataError(f"{mask_folder / n}: mask size differs from the frame's")
                        masks[i] = m
            out.append(Frame(stem, image, alphas.astype(np.float32) / 255.0, (masks > 127).astype(np.uint8),
                             tuple(names)))
        if not out:
            raise DataError(f"{self.base / 'fgr' / video}: no frames")
        return out


# The layouts and their checker (used by the synthesis stages on pulled datasets).

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
