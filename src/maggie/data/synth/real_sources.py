"""The published foreground/background sources as an asset bank (``data.source: real``).

The same scene builders that compose the procedural figures (:mod:`.scenes`) compose real people
here, exactly as the authors built I-HIM50K and V-HIM2K5 / V-HIM60: the pull stage indexes the
sources named in ``data.real`` into ``<root>/raw/manifest.json`` (and fetches the split lists), and
:class:`RealAssetBank` serves them through the interface of :class:`.procedural.AssetBank`
(``figures``, ``backgrounds``, ``figure``, ``background``, ``aspect``, ``clip_length``,
``figure_frame``, ``background_frame``).  Pools are named in ``data.real``:

* ``image_pools.<name>: {fg, bg, invalid_names}``: ``fg`` is an HHM-style folder (``images/<n>.jpg`` with
  ``alphas/<n>.png``), ``bg`` a folder of background images (BG-20K), ``invalid_names`` a fetched list
  of image names to skip (the authors' ``invalid_him.txt``).
* ``video_pools.<name>: {fg_list, bg_list}``: lists (fetched, e.g. ``fg_train.txt``) of paths relative to
  ``video_root``: foreground frame folders in a ``fgr`` tree with the alpha at the same path under
  ``pha`` (VideoMatte240K), or folders of RGBA frames (as the authors' script reads sources outside
  an ``fgr`` tree, e.g. VM108, CRGNN), backgrounds as image files or frame folders.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from maggie.data.fetch.source_lists import read_list
from maggie.data.layout import DataError
from maggie.files import read_gray, read_rgb, stable_hash

log = logging.getLogger(__name__)
GENERATOR = "maggie.data.real_sources"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _alpha_folder(fgr: Path) -> Path | None:
    """The ``pha`` twin of a ``fgr`` frame folder; None for a folder of RGBA frames (alpha in channel 4)."""
    parts = list(fgr.parts)
    if "fgr" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("fgr")
    return Path(*parts[:i], "pha", *parts[i + 1:])


def _read_rgba_alpha(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim != 3 or image.shape[2] != 4:
        raise DataError(f"{path}: a clip outside an fgr/pha tree must hold RGBA frames (alpha in channel 4)")
    return image[:, :, 3]


def _index_image_pool(name: str, cfg: dict, lists_dir: Path) -> tuple[dict, list[str], list[str]]:
    fg, bg = Path(cfg.get("fg") or ""), Path(cfg.get("bg") or "")
    for what, folder in (("fg", fg), ("bg", bg)):
        if not str(folder) or not folder.is_dir():
            raise DataError(f"data.real.image_pools.{name}.{what}: {folder} is not a folder")
    images_dir, alphas_dir = fg / "images", fg / "alphas"
    if not images_dir.is_dir() or not alphas_dir.is_dir():
        raise DataError(f"{fg}: expected HHM layout images/<name>.jpg + alphas/<name>.png")
    invalid = set(read_list(lists_dir / cfg["invalid_names"])) if cfg.get("invalid_names") else set()
    files, ids, skipped, no_alpha = {}, [], 0, []
    for img in _images_in(images_dir):
        if img.name in invalid:
            skipped += 1
            continue
        alpha = alphas_dir / f"{img.stem}.png"
        if not alpha.is_file():
            no_alpha.append(img.name)
            continue
        ident = f"{name}/{img.stem}"
        files[ident] = [str(img), str(alpha)]
        ids.append(ident)
    if no_alpha:
        log.warning("%s: %d images without alphas/<name>.png skipped (%s ...)", images_dir, len(no_alpha),
                    ", ".join(no_alpha[:3]))
    if not ids:
        raise DataError(f"{images_dir}: no usable foregrounds ({skipped} listed invalid, "
                        f"{len(no_alpha)} without alpha)")
    bgs = [str(p) for p in _images_in(bg)]
    if not bgs:
        raise DataError(f"{bg}: no background images")
    log.info("image pool %s: %d foregrounds (%d invalid skipped), %d backgrounds", name, len(ids), skipped, len(bgs))
    return files, ids, bgs


def _index_video_pool(name: str, cfg: dict, root: Path, lists_dir: Path) -> tuple[dict, list[str], list[str]]:
    clips, ids, missing = {}, [], []
    for entry in read_list(lists_dir / cfg["fg_list"]):
        fgr = root / entry
        pha = _alpha_folder(fgr)
        if not fgr.is_dir() or (pha is not None and not pha.is_dir()):
            missing.append(entry)
            continue
        frames = _images_in(fgr)
        if pha is None:  # RGBA frames: the alpha is read from the frame itself
            pairs = [[str(f), str(f)] for f in frames]
        else:
            alphas = {p.stem: p for p in _images_in(pha)}
            pairs = [[str(f), str(alphas[f.stem])] for f in frames if f.stem in alphas]
        if not pairs:
            missing.append(entry)
            continue
        ident = f"{name}/{entry}"
        clips[ident] = pairs
        ids.append(ident)
    if missing:
        raise DataError(f"{lists_dir / cfg['fg_list']}: {len(missing)} listed clips have no fgr/pha frames under "
                        f"{root} ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})")
    bgs, bad = [], []
    for entry in read_list(lists_dir / cfg["bg_list"]):
        path = root / entry
        if path.is_file() or (path.is_dir() and _images_in(path)):
            bgs.append(str(path))
        else:
            bad.append(entry)
    if bad:
        raise DataError(f"{lists_dir / cfg['bg_list']}: {len(bad)} listed backgrounds missing under {root} "
                        f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})")
    log.info("video pool %s: %d foreground clips, %d backgrounds", name, len(ids), len(bgs))
    return clips, ids, bgs


def index_real_sources(real: dict[str, Any], lists_dir: Path) -> dict:
    """The manifest of :class:`RealAssetBank`: every pool's foregrounds and backgrounds, resolved to files."""
    image_pools, video_pools = real.get("image_pools") or {}, real.get("video_pools") or {}
    if not image_pools and not video_pools:
        raise DataError("data.source is 'real' but data.real names no image_pools or video_pools")
    overlap = sorted(set(image_pools) & set(video_pools))
    if overlap:
        raise DataError(f"data.real: pool names used for both images and videos: {overlap}")
    manifest: dict[str, Any] = {"generator": GENERATOR, "figures": {}, "backgrounds": {}, "stills": {}, "clips": {}}
    for name, cfg in image_pools.items():
        files, ids, bgs = _index_image_pool(name, cfg or {}, lists_dir)
        manifest["stills"].update(files)
        manifest["figures"][name], manifest["backgrounds"][name] = ids, bgs
    if video_pools:
        root = Path(real.get("video_root") or "")
        if not str(root) or not root.is_dir():
            raise DataError(f"data.real.video_root: {root} is not a folder")
        for name, cfg in video_pools.items():
            clips, ids, bgs = _index_video_pool(name, cfg or {}, root, lists_dir)
            manifest["clips"].update(clips)
            manifest["figures"][name], manifest["backgrounds"][name] = ids, bgs
    manifest["config_hash"] = stable_hash({"real": real, "figures": manifest["figures"],
                                           "backgrounds": manifest["backgrounds"]})
    return manifest


def _crop_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha)
    if len(ys) == 0:
        return 0, 0, alpha.shape[1], alpha.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class RealAssetBank:
    """Read access to indexed real sources, with per-process caching (see the module docstring)."""

    def __init__(self, raw_dir: str | Path, manifest: dict | None = None):
        self.root = Path(raw_dir)
        self.manifest = manifest if manifest is not None else json.loads((self.root / "manifest.json").read_text())
        self.stills, self.clips = self.manifest["stills"], self.manifest["clips"]

    def figures(self, pool: str) -> list[str]:
        ids = self.manifest["figures"].get(pool) or []
        if not ids:
            raise DataError(f"data.real: no foreground pool {pool!r} (have {sorted(self.manifest['figures'])}); "
                            "set the synthesis section's fg_pool to one of them")
        return ids

    def backgrounds(self, pool: str) -> list[str]:
        ids = self.manifest["backgrounds"].get(pool) or []
        if not ids:
            raise DataError(f"data.real: no background pool {pool!r} (have {sorted(self.manifest['backgrounds'])})")
        return ids

    def _pair(self, ident: str, index: int) -> tuple[str, str]:
        if ident in self.stills:
            return tuple(self.stills[ident])
        frames = self.clips[ident]
        period = max(1, 2 * len(frames) - 2)  # play back and forth past the clip's end
        k = index % period
        return tuple(frames[k if k < len(frames) else period - k])

    @functools.lru_cache(maxsize=256)  # noqa: B019  (one bank per process; the cache is the point)
    def _frame(self, ident: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        rgb_path, alpha_path = self._pair(ident, index)
        rgb = read_rgb(Path(rgb_path))
        alpha = _read_rgba_alpha(Path(alpha_path)) if alpha_path == rgb_path else read_gray(Path(alpha_path))
        if rgb.shape[:2] != alpha.shape:
            raise DataError(f"{alpha_path}: alpha {alpha.shape} and image {rgb.shape[:2]} differ in size")
        return rgb, alpha

    def figure(self, ident: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(rgb, alpha, meta) cropped to the alpha's bounding box (first frame for a clip)."""
        rgb, alpha = self._frame(ident, 0)
        x0, y0, x1, y1 = _crop_box(alpha)
        return rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1], {"source": self._pair(ident, 0)[0]}

    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def aspect(self, ident: str) -> float:
        _rgb, alpha, _ = self.figure(ident)
        return alpha.shape[1] / max(1, alpha.shape[0])

    def clip_length(self, ident: str) -> int | None:
        return len(self.clips[ident]) if ident in self.clips else None

    @functools.lru_cache(maxsize=512)  # noqa: B019
    def _window_box(self, ident: str, start: int, count: int) -> tuple[int, int, int, int]:
        boxes = np.array([_crop_box(self._frame(ident, start + f)[1]) for f in range(count)])
        return int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())

    def figure_frame(self, ident: str, height: float, frame: int, fps: float, window: tuple[int, int] = (0, 1)
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
        """Frame ``frame`` of the clip window ``(start, count)``: (rgb, alpha, anchor, scale) where the
        crop is the window's union box (the person moves inside it as filmed), the anchor its bottom
        centre and ``scale`` makes the box ``height`` pixels tall."""
        start, count = window
        x0, y0, x1, y1 = self._window_box(ident, start, max(1, count))
        rgb, alpha = self._frame(ident, start + frame)
        return (rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1], ((x1 - x0) / 2.0, float(y1 - y0)),
                height / max(1, y1 - y0))

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def _background_frames(self, ident: str) -> list[str]:
        path = Path(ident)
        return [str(p) for p in _images_in(path)] if path.is_dir() else [ident]

    @functools.lru_cache(maxsize=64)  # noqa: B019
    def background_frame(self, ident: str, frame: int) -> np.ndarray:
        frames = self._background_frames(ident)
        return read_rgb(Path(frames[min(frame, len(frames) - 1)]))

    def background(self, ident: str) -> np.ndarray:
        return self.background_frame(ident, 0)
