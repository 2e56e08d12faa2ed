"""Every file the project writes goes through here: atomic, and readable by others as the umask allows.

A file is written under a hidden sibling name (``.<name>.<pid>-<n>.partial``) and renamed onto
its target when complete; a folder is built the same way and swapped in whole (the old one is
removed only afterwards).  Readers never see half-written output, a crash leaves the old output
intact, and :func:`remove_stale_partials` clears what a killed run left behind.  Files are
created with ``open(..., "xb")`` and folders with ``mkdir``, so their modes follow the umask
(0644 / 0755 under umask 022), unlike ``tempfile``'s owner-only 0600 / 0700.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maggie.errors import DataError

PARTIAL = ".partial"
_counter = itertools.count()


def partial_path(target: str | os.PathLike) -> Path:
    """A fresh hidden sibling of ``target`` to build it under."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{next(_counter)}{PARTIAL}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` (an empty, umask-moded file) then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with open(tmp, "xb"):
            pass
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # writers that replace the file (safetensors) make it 0600
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder to fill; on success it replaces ``target`` (the old one is removed last)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Move a completely written folder onto ``target`` (the old one is removed only afterwards)."""
    old = None
    if target.exists() or target.is_symlink():
        old = partial_path(target)
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left in ``folder``: hidden ``*.partial`` files and folders of dead processes."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{PARTIAL}"):
        pid = p.name.rsplit(".", 2)[-2].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    atomic_write(dest, lambda p: shutil.copyfile(src, p))


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 grey ``[H, W]`` or RGB ``[H, W, 3]`` image (deterministic)."""
    array = image[..., ::-1] if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"could not encode a PNG of shape {image.shape}")
    return buffer.tobytes()


def encode_jpg(image: np.ndarray, quality: int = 95) -> bytes:
    ok, buffer = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not encode a JPEG of shape {image.shape}")
    return buffer.tobytes()


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """uint8 grey or RGB image -> PNG, atomically."""
    write_bytes(path, encode_png(image))


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """RGB/grey uint8 as .png or .jpg (by suffix), atomically, creating parent folders."""
    path = Path(path)
    write_bytes(path, encode_jpg(image, quality) if path.suffix.lower() in (".jpg", ".jpeg") else encode_png(image))


def write_figure(path: str | os.PathLike, fig) -> None:
    """Render a matplotlib figure to an RGB PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    write_png(path, rgba)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]``; one clear error naming the file if it is missing or not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: missing or not a readable image")
    return np.ascontiguousarray(image[..., ::-1])


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """uint8 ``[H, W]`` matte or mask: 16-bit files scaled to 8 bits, colour files by their brightest channel."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: missing or not a readable matte or mask")
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    return np.ascontiguousarray(image)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float in [0, 1] to uint8 with rounding."""
    return np.clip(np.rint(np.asarray(values, np.float32) * 255.0), 0, 255).astype(np.uint8)


def stable_hash(payload: Any) -> str:
    """Short sha256 of a JSON-able payload with sorted keys (for manifests and params hashes)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
