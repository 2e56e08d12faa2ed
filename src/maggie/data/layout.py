"""Readers for the published MaGGIe test layouts (HIM2K/M-HIM2K images, V-HIM60 videos).

They return arrays at the files' own resolution (uint8 RGB images, float32 mattes in
[0, 1], binary masks), one sample at a time, and report bad data as a single line that
names the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class DataError(ValueError):
    """Bad or missing data, reported as one line naming the file."""


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: unreadable or missing image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: unreadable or missing matte/mask")
    if img.ndim == 3:
        img = img[..., 0]
    if img.dtype == np.uint16:
        img = (img / 257).astype(np.uint8)
    return img


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


class VideoTestSet:
    """``<root>/<dir>/<split>/fgr/<video>/<frame>.jpg``, ``pha/<video>/<frame>/NN.png``,
    ``<mask_dir>/<video>/<frame>/NN.png`` (the V-HIM60 layout)."""

    def __init__(self, root: str | Path, dirname: str, split: str, mask_dir: str = "xmem"):
        self.base = Path(root) / dirname / split
        self.mask_name = mask_dir
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
            mask_folder = self.base / self.mask_name / video / stem
            masks = np.zeros_like(alphas)
            if mask_folder.is_dir():
                for i, n in enumerate(names):
                    if (mask_folder / n).exists():
                        m = read_gray(mask_folder / n)
                        if m.shape != shape:
                            raise DataError(f"{mask_folder / n}: mask size differs from the frame's")
                        masks[i] = m
            out.append(Frame(stem, image, alphas.astype(np.float32) / 255.0, (masks > 127).astype(np.uint8)))
        if not out:
            raise DataError(f"{self.base / 'fgr' / video}: no frames")
        return out
