"""What ``maggie predict`` reads: images, image folders, videos, and their guidance masks.

Masks come either as a folder of per-instance binary PNGs (the published layout,
``<image>/00.png, 01.png, ...``; per frame for video) or as one instance-ID map per image or
frame (0 = background, k = person k).  Every problem is reported as one line naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maggie.data.layout import IMAGE_EXTS, DataError, read_gray, read_rgb

log = logging.getLogger("maggie.predict")

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class InputError(DataError):
    """A user input the predictor cannot use (one line, naming the file)."""


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


@dataclass(frozen=True)
class MaskSource:
    """Where one image's (or frame's) masks are: a folder of NN.png files or one ID-map file."""

    path: Path

    @property
    def is_id_map(self) -> bool:
        return self.path.is_file()

    def instance_names(self) -> list[str]:
        """Instance names without reading pixels: file stems, or the IDs in the map (read once)."""
        if self.is_id_map:
            ids = np.unique(read_gray(self.path))
            return [f"{int(i) - 1:02d}" for i in ids if i > 0]  # person k is NN = k - 1, as 00.png is the first
        return [p.stem for p in sorted(self.path.glob("*.png"))]

    def read(self, names: list[str], shape: tuple[int, int]) -> np.ndarray:
        """Binary masks ``[len(names), H, W]`` uint8 at ``shape``; a name this source lacks is empty."""
        h, w = shape
        out = np.zeros((len(names), h, w), np.uint8)
        if self.is_id_map:
            ids = read_gray(self.path)
            ids = _fit(ids, shape, self.path)
            for i, name in enumerate(names):
                out[i] = ids == int(name) + 1
            return out
        for i, name in enumerate(names):
            f = self.path / f"{name}.png"
            if not f.exists():
                continue
            m = read_gray(f)
            values = np.unique(m)
            if not np.isin(values, (0, 1, 255)).all():
                raise InputError(f"{f}: mask is not binary (values {', '.join(str(v) for v in values[:6])}"
                                 f"{' ...' if len(values) > 6 else ''}); use 0 and 255, or pass an ID map")
            out[i] = _fit(m, shape, f) > 0
        return out


_resized_notice: set[Path] = set()


def _fit(mask: np.ndarray, shape: tuple[int, int], path: Path) -> np.ndarray:
    if mask.shape == shape:
        return mask
    if path.parent not in _resized_notice:
        _resized_notice.add(path.parent)
        log.warning("%s: mask is %dx%d, the image %dx%d; resizing it (nearest)", path, mask.shape[1], mask.shape[0],
                    shape[1], shape[0])
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def find_mask(masks: Path, stem: str, single: bool = False) -> MaskSource:
    """The masks of image ``stem`` under ``masks``: ``<stem>/`` or ``<stem>.png``; for a single
    image ``masks`` may also be the NN.png folder itself or the ID-map file itself."""
    if single and masks.is_file():
        return MaskSource(masks)
    if (masks / stem).is_dir():
        return MaskSource(masks / stem)
    if (masks / f"{stem}.png").is_file():
        return MaskSource(masks / f"{stem}.png")
    if single and masks.is_dir() and any(masks.glob("*.png")):
        return MaskSource(masks)
    raise InputError(f"{masks}: no masks for '{stem}' (expected {masks / stem}/NN.png or {masks / stem}.png)")


def union_names(sources: list[MaskSource]) -> list[str]:
    """Instance names over all frames, so a person who appears later keeps one slot throughout."""
    names: set[str] = set()
    for s in sources:
        names.update(s.instance_names())
    return sorted(names, key=lambda n: (len(n), n))


def frame_mask_sources(masks: Path, count: int, stems: list[str] | None = None) -> list[MaskSource]:
    """Per-frame mask sources of a video: entries of ``masks`` in sorted order (folders or ID maps),
    matched to frames by name when frames have names, else by position."""
    if not masks.is_dir():
        raise InputError(f"{masks}: a video needs a folder of per-frame masks (<frame>/NN.png or <frame>.png)")
    if stems is not None and all((masks / s).is_dir() or (masks / f"{s}.png").is_file() for s in stems):
        return [find_mask(masks, s) for s in stems]
    entries = sorted(p for p in masks.iterdir() if p.is_dir() or p.suffix.lower() == ".png")
    if len(entries) != count:
        raise InputError(f"{masks}: {len(entries)} per-frame mask entries for {count} frames")
    return [MaskSource(p) for p in entries]


@dataclass
class VideoInput:
    """Frames of a video file (decoded lazily) or of a folder of frame images."""

    path: Path

    def __post_init__(self) -> None:
        if self.path.is_dir():
            self.files = image_files(self.path)
            if not self.files:
                raise InputError(f"{self.path}: no frame images")
            first = read_rgb(self.files[0])
            self.count, self.fps = len(self.files), 25.0
            self.shape = first.shape[:2]
            return
        self.files = None
        cap = cv2.VideoCapture(str(self.path))
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise InputError(f"{self.path}: unreadable video (no frame could be decoded)")
        self.count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
        self.shape = frame.shape[:2]
        cap.release()
        if self.count <= 0:
            self.count = sum(1 for _ in self._decode())

    @property
    def stems(self) -> list[str] | None:
        return [p.stem for p in self.files] if self.files is not None else None

    def _decode(self) -> Iterator[np.ndarray]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    def frames(self) -> Iterator[np.ndarray]:
        if self.files is not None:
            for f in self.files:
                img = read_rgb(f)
                if img.shape[:2] != self.shape:
                    raise InputError(f"{f}: frame size differs from the first frame's")
                yield img
            return
        n = 0
        for frame in self._decode():
            n += 1
            yield frame
        if n != self.count:
            log.warning("%s: the container announced %d frames, %d were decoded", self.path, self.count, n)


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS
