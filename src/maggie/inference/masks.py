"""Guidance masks as people have them: per-person mask files or one instance-ID map per image or frame.

What is read, and how (anything else is refused with one line saying how to convert it):

* a **per-person mask file** (``<image>/00.png, 01.png, ...``): 8- or 16-bit greyscale, 1-bit or
  palette PNG, or RGB(A); binary by value (0 and the format's maximum, or 0 and 1); a colour file
  counts every non-black pixel as the person (its alpha channel is ignored).  A greyscale file with
  values in between (a soft or anti-aliased mask) is refused: binarise it first.
* an **ID map** (``<image>.png``): 0 = background, k = person k (written as ``NN = k - 1``); 8- or
  16-bit greyscale values or palette indices are the IDs.  A file holding only 0 and the format's
  maximum (or 0 and 1) is one person.  Colour (RGB) ID maps are refused: their colours are not IDs
  without a palette; save them as palette or greyscale PNGs.  A soft or anti-aliased mask (more than
  20 values, the largest covering 4x more pixels than any other: an interior and its soft edge) is
  refused too: read as an ID map it would become dozens of "people".

A mask at another resolution than its image is resized (nearest) when it has the image's aspect
ratio, refused otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maggie.errors import DataError

log = logging.getLogger("maggie.predict")
MAX_MASK_PIXELS = 200_000_000


class InputError(DataError):
    """A user input the predictor cannot use (one line, naming the file)."""


def _load(path: Path) -> tuple[np.ndarray, str, int]:
    """(pixel values, PIL mode, the format's maximum value) of a mask file, without scaling."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_MASK_PIXELS:
                raise InputError(f"{path}: {im.width}x{im.height} mask is larger than {MAX_MASK_PIXELS} pixels")
            mode = im.mode
            if mode == "1":
                return np.array(im, dtype=np.uint8), mode, 1
            if mode in ("P", "PA"):
                return np.array(im.convert("P") if mode == "PA" else im, dtype=np.int64), "P", 255
            if mode in ("L", "LA"):
                return np.array(im.getchannel(0), dtype=np.int64), "L", 255
            if mode.startswith("I;16") or mode == "I":
                arr = np.array(im, dtype=np.int64)
                return arr, "I", 65535 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
            if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
                return np.array(im.convert("RGB"), dtype=np.int64), "RGB", 255
            raise InputError(f"{path}: unsupported mask format (PIL mode {mode}); save it as an 8-bit PNG")
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable mask image ({str(exc).splitlines()[0][:80]})") from exc


def read_person_mask(path: Path) -> np.ndarray:
    """One person's binary mask, uint8 {0, 1} ``[H, W]``."""
    values, mode, top = _load(path)
    if mode == "RGB":
        if np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 1], values[..., 2]):
            values = values[..., 0]
        else:
            return (values.max(axis=2) > 0).astype(np.uint8)  # a colour mask: any non-black pixel
    if mode == "P":
        return (values > 0).astype(np.uint8)
    present = np.unique(values)
    if not (np.isin(present, (0, top)).all() or np.isin(present, (0, 1)).all()):
        shown = ", ".join(str(int(v)) for v in present[:6]) + (" ..." if len(present) > 6 else "")
        raise InputError(f"{path}: mask is not binary (values {shown}); use 0 and {top}, or pass an ID map")
    return (values > 0).astype(np.uint8)


def read_id_map(path: Path) -> np.ndarray:
    """Instance IDs, int64 ``[H, W]`` (0 = background)."""
    values, mode, top = _load(path)
    if mode == "RGB":
        if not (np.array_equal(values[..., 0], values[..., 1]) and np.array_equal(values[..., 1], values[..., 2])):
            raise InputError(f"{path}: a colour ID map is ambiguous; save it as a palette or greyscale PNG "
                             "(0 = background, k = person k), or pass one mask file per person")
        values = values[..., 0]
    present, counts = np.unique(values, return_counts=True)
    if mode != "P" and len(present) == 2 and present[0] == 0 and present[1] in (1, top):
        return (values > 0).astype(np.int64)  # a binary mask: one person
    if mode != "P" and len(present) > 20 and counts[-1] > 4 * counts[1:-1].max():
        raise InputError(f"{path}: looks like a soft or anti-aliased mask (mostly {present[-1]}, "
                         f"{len(present) - 2} values in between), not an ID map; binarise it, or give "
                         "one file per person")
    return values


_resized_notice: set[Path] = set()


def fit(mask: np.ndarray, shape: tuple[int, int], path: Path) -> np.ndarray:
    """A mask at the image's size: resized (nearest) if only its resolution differs, refused otherwise."""
    if mask.shape == shape:
        return mask
    h, w = mask.shape
    if abs(w / h - shape[1] / shape[0]) > 0.01 * shape[1] / shape[0]:
        raise InputError(f"{path}: mask is {w}x{h}, the image {shape[1]}x{shape[0]} (another aspect ratio)")
    if path.parent not in _resized_notice:
        _resized_notice.add(path.parent)
        log.warning("%s: mask is %dx%d, the image %dx%d; resizing it (nearest)", path, w, h, shape[1], shape[0])
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(
        mask.dtype)


@dataclass(frozen=True)
class MaskSource:
    """Where one image's (or frame's) masks are: a folder of NN.png files or one ID-map file."""

    path: Path

    @property
    def is_id_map(self) -> bool:
        return self.path.is_file()

    def instance_names(self) -> list[str]:
        """Instance names: file stems, or the IDs of the map (person k is ``NN = k - 1``)."""
        if self.is_id_map:
            return [f"{int(i) - 1:02d}" for i in np.unique(read_id_map(self.path)) if i > 0]
        return [p.stem for p in sorted(self.path.glob("*.png"))]

    def read(self, names: list[str], shape: tuple[int, int]) -> np.ndarray:
        """Binary masks ``[len(names), H, W]`` uint8 at ``shape``; a name this source lacks is empty."""
        out = np.zeros((len(names), *shape), np.uint8)
        if self.is_id_map:
            ids = fit(read_id_map(self.path), shape, self.path)
            for i, name in enumerate(names):
                out[i] = ids == int(name) + 1
            return out
        for i, name in enumerate(names):
            f = self.path / f"{name}.png"
            if f.exists():
                out[i] = fit(read_person_mask(f), shape, f)
        return out


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
