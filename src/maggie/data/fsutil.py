"""Atomic outputs: a whole dataset folder is built next to its final place and renamed onto it at the end,
single files go through a temporary file and ``os.replace``.  A crash never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_output_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh ``<out>.tmp-XXXX`` folder; on success it replaces ``out`` (old one removed last)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=out.name + ".old-", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey [H, W] or RGB [H, W, 3] image (deterministic)."""
    array = image[..., ::-1] if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"could not encode a PNG of shape {image.shape}")
    return buffer.tobytes()


def encode_jpg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buffer = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError(f"could not encode a JPEG of shape {image.shape}")
    return buffer.tobytes()


def write_image(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Write RGB/grey uint8 as .png or .jpg (by suffix), creating parent folders; used inside temp trees."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_jpg(image, quality) if path.suffix.lower() in (".jpg", ".jpeg") else encode_png(image)
    path.write_bytes(data)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"{path}: missing or not a readable image")
    return np.ascontiguousarray(image[..., ::-1])


def read_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"{path}: missing or not a readable image")
    return image


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float in [0, 1] to uint8 with rounding."""
    return np.clip(np.rint(np.asarray(values, np.float32) * 255.0), 0, 255).astype(np.uint8)


def stable_hash(payload) -> str:
    """Short sha256 of a JSON-able payload with sorted keys (for manifests and params hashes)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
