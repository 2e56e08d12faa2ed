"""Atomic file writing and small image helpers shared by the pipeline stages."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """uint8 gray or RGB image -> PNG, atomically."""
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def write(p: Path) -> None:
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise OSError(f"{path}: could not encode PNG")
        p.write_bytes(buf.tobytes())

    atomic_write(path, write)


def write_figure(path: str | os.PathLike, fig) -> None:
    """Render a matplotlib figure to an RGB PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    write_png(path, rgba)


def replace_dir(tmp_dir: Path, target: Path) -> None:
    """Move a completely written folder onto ``target`` (the old one is removed only afterwards)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp_dir, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def to_uint8(alpha: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
