"""What ``maggie predict`` reads: images, image folders and videos (masks: ``maggie.inference.masks``).

Every problem is reported as one line naming the file, before anything is written: sizes are checked
from the file's header before it is decoded (``--max-pixels``, and an aspect ratio of at most 10:1),
and a truncated image is refused rather than filled with grey.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maggie.data.layout import IMAGE_EXTS
from maggie.inference.masks import InputError, MaskSource, find_mask, frame_mask_sources, union_names

__all__ = ["InputError", "MaskSource", "VideoInput", "find_mask", "frame_mask_sources", "image_files", "is_video",
           "read_image", "union_names"]

log = logging.getLogger("maggie.predict")

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo; larger inputs need --max-pixels
MAX_ASPECT = 10.0  # longest side / shortest side


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def check_size(path: Path, width: int, height: int, max_pixels: int, short_size: int | None = None) -> None:
    """Refuse, before anything is decoded or allocated, an input too large or too thin to process."""
    if width < 1 or height < 1:
        raise InputError(f"{path}: empty image ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than --max-pixels "
                         f"{max_pixels / 1e6:.0f}M (raise it if this is intended)")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise InputError(f"{path}: {width}x{height} has an aspect ratio of {aspect:.0f}:1 (at most {MAX_ASPECT:.0f}:1)")
    resized = (short_size or 0) ** 2 * aspect
    if resized > max_pixels:
        raise InputError(f"{path}: at --short-size {short_size} this image would be {resized / 1e6:.0f} megapixels, "
                         f"more than --max-pixels {max_pixels / 1e6:.0f}M")


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, short_size: int | None = None) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` of a user's image: its header is checked first, a truncated file is refused."""
    from PIL import Image, UnidentifiedImageError

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit, checked from the header
    try:
        with Image.open(path) as im:
            Image.MAX_IMAGE_PIXELS = limit
            check_size(path, im.width, im.height, max_pixels, short_size)
            im.load()
            return np.asarray(im.convert("RGB")).copy()
    except InputError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({str(exc).splitlines()[0][:80]})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = limit


@dataclass
class VideoInput:
    """Frames of a video file (decoded lazily) or of a folder of frame images."""

    path: Path
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.path.is_dir():
            self.files = image_files(self.path)
            if not self.files:
                raise InputError(f"{self.path}: no frame images")
            first = read_image(self.files[0], self.max_pixels)
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
        check_size(self.path, self.shape[1], self.shape[0], self.max_pixels)
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
                img = read_image(f, self.max_pixels)
                if img.shape[:2] != self.shape:
                    raise InputError(f"{f}: frame size differs from the first frame's")
                yield img
            return
        from maggie.inference.video_io import AvFrameReader, have_pyav

        n = 0
        for frame in (AvFrameReader(self.path) if have_pyav() else self._decode()):
            n += 1
            yield frame
        if n != self.count:
            log.warning("%s: the container announced %d frames, %d were decoded", self.path, self.count, n)


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS
