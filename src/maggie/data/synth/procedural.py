"""The procedural asset bank (``data/raw``): human-like figures with true alpha and backgrounds.

Layout written by :func:`build_asset_bank`::

    raw/fg/<id>/image.png   straight RGB colour of the figure, cropped to its alpha
    raw/fg/<id>/alpha.png   its true alpha (uint8)
    raw/fg/<id>/meta.json   the full figure spec, so a video can re-render and animate the figure
    raw/bg/<id>.jpg         backgrounds (larger than the frames, so a video camera can pan over them)
    raw/manifest.json       ids per pool, kinds, seed, generator version, config hash

Assets are split into pools: ``train`` (training sets), ``test`` (in-distribution test subsets, unseen
figures drawn with the training generator settings) and ``held_out`` (other generator settings and
background kinds, photographs where scikit-image is installed).  Every asset is seeded from
(seed, pool, index), so the bank does not depend on the number of workers.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np

from maggie.data.synth.backgrounds import PROCEDURAL_KINDS, available_photos, render_background
from maggie.data.synth.figure_render import render_figure
from maggie.data.synth.figures import FIGURE_STYLES, sample_figure_spec
from maggie.data.synth.parallel import parallel_map, sample_rng
from maggie.files import (
    atomic_dir,
    read_gray,
    read_rgb,
    stable_hash,
    to_uint8,
    write_image,
    write_json,
)

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
POOLS = ("train", "test", "held_out")
DEFAULT_BANK: dict = {
    "figures": {"train": 48, "test": 16, "held_out": 16},
    "backgrounds": {"train": 32, "test": 12, "held_out": 12},
    "figure_height": 256,
    "bg_size": [288, 384],
    "bg_kinds": {
        "train": ["gradient", "texture", "clutter"],
        "test": ["gradient", "texture", "clutter"],
        "held_out": ["scene", "photo"],
    },
    "figure_style": {"train": "train", "test": "train", "held_out": "held_out"},
    "styles": {},
}


class BankError(FileNotFoundError):
    """The asset bank is missing or malformed."""


def resolve_bank_config(cfg: dict | None) -> dict:
    """Defaults + ``cfg`` (the ``data.bank`` section; a whole ``data`` section is accepted too)."""
    cfg = dict(cfg or {})
    if "bank" in cfg and isinstance(cfg["bank"], dict):
        cfg = dict(cfg["bank"])
    unknown = sorted(set(cfg) - set(DEFAULT_BANK))
    if unknown:
        raise ValueError(f"data.bank: unknown keys {unknown}; allowed: {sorted(DEFAULT_BANK)}")
    resolved = {**DEFAULT_BANK, **cfg}
    for key in ("figures", "backgrounds", "bg_kinds", "figure_style"):
        resolved[key] = {**DEFAULT_BANK[key], **(cfg.get(key) or {})}
        if set(resolved[key]) - set(POOLS):
            raise ValueError(f"data.bank.{key}: pools must be among {POOLS}, got {sorted(resolved[key])}")
    for pool, kinds in resolved["bg_kinds"].items():
        bad = sorted(set(kinds) - set(PROCEDURAL_KINDS) - {"photo"})
        if bad:
            raise ValueError(f"data.bank.bg_kinds.{pool}: unknown kinds {bad}")
    for style in resolved["styles"]:
        if style not in FIGURE_STYLES:
            raise ValueError(
                f"data.bank.styles: unknown style {style!r}; expected one of {sorted(FIGURE_STYLES)}"
            )
    return resolved


def figure_id(pool: str, index: int) -> str:
    return f"{pool}_{index:04d}"


def _crop_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha)
    if len(ys) == 0:
        return 0, 0, alpha.shape[1], alpha.shape[0]
    return (
        int(max(0, xs.min() - 1)),
        int(max(0, ys.min() - 1)),
        int(min(alpha.shape[1], xs.max() + 2)),
        int(min(alpha.shape[0], ys.max() + 2)),
    )


def _make_figure(task: tuple) -> dict:
    out, seed, pool, index, style, overrides, height = task
    spec = sample_figure_spec(sample_rng(seed, "fg/" + pool, index), style, overrides)
    render = render_figure(spec, height)
    alpha = to_uint8(render.alpha)
    rgb = to_uint8(render.rgb)
    x0, y0, x1, y1 = _crop_box(alpha)
    ident = figure_id(pool, index)
    folder = Path(out) / "fg" / ident
    write_image(folder / "image.png", rgb[y0:y1, x0:x1])
    write_image(folder / "alpha.png", alpha[y0:y1, x0:x1])
    meta = {
        "id": ident,
        "pool": pool,
        "style": style,
        "height_px": height,
        "size": [y1 - y0, x1 - x0],
        "anchor": [round(float(render.anchor[0]) - x0, 3), round(float(render.anchor[1]) - y0, 3)],
        "spec": spec,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return {"id": ident, "aspect": round((x1 - x0) / max(1, y1 - y0), 4)}


def _make_background(task: tuple) -> dict:
    out, seed, pool, index, kind, photo, size = task
    rng = sample_rng(seed, "bg/" + pool, index)
    image = render_background(kind, rng, tuple(size), Path(photo) if photo else None)
    ident = f"{pool}_{index:04d}"
    write_image(Path(out) / "bg" / f"{ident}.jpg", image, quality=95)
    return {"id": ident, "kind": kind, "photo": Path(photo).name if photo else None}


def build_asset_bank(out_dir: str | Path, cfg: dict | None, seed: int, workers: int = 1) -> Path:
    """Write the procedural asset bank to ``out_dir`` (atomically) and return its path."""
    bank = resolve_bank_config(cfg)
    photos = available_photos()
    out_dir = Path(out_dir)
    fig_tasks, bg_tasks = [], []
    with atomic_dir(out_dir) as tmp:
        for pool in POOLS:
            style = bank["figure_style"][pool]
            overrides = bank["styles"].get(style, {})
            for i in range(int(bank["figures"][pool])):
                fig_tasks.append((str(tmp), seed, pool, i, style, overrides, int(bank["figure_height"])))
            kinds = [k for k in bank["bg_kinds"][pool] if k != "photo" or photos]
            if not kinds:
                kinds = ["scene"]
                log.info("bank: no photographs available for pool %s; using 'scene' backgrounds", pool)
            for i in range(int(bank["backgrounds"][pool])):
                kind = kinds[i % len(kinds)]
                photo = str(photos[(i // len(kinds)) % len(photos)]) if kind == "photo" else None
                bg_tasks.append((str(tmp), seed, pool, i, kind, photo, list(bank["bg_size"])))
        figures = parallel_map(_make_figure, fig_tasks, workers, "bank figures")
        backgrounds = parallel_map(_make_background, bg_tasks, workers, "bank backgrounds")
        manifest = {
            "generator": "maggie.data.procedural",
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "config": bank,
            "config_hash": stable_hash({"bank": bank, "seed": int(seed)}),
            "photos_available": bool(photos),
            "figures": {
                pool: [f["id"] for f in figures if f["id"].rsplit("_", 1)[0] == pool] for pool in POOLS
            },
            "aspect": {f["id"]: f["aspect"] for f in figures},
            "backgrounds": {
                pool: [b["id"] for b in backgrounds if b["id"].rsplit("_", 1)[0] == pool] for pool in POOLS
            },
            "bg_kinds": {b["id"]: b["kind"] for b in backgrounds},
            "counts": {"figures": len(figures), "backgrounds": len(backgrounds)},
        }
        write_json(tmp / "manifest.json", manifest, indent=1)
    log.info("asset bank: %d figures, %d backgrounds -> %s", len(figures), len(backgrounds), out_dir)
    return out_dir


class AssetBank:
    """Read access to a bank written by :func:`build_asset_bank`, with per-process caching."""

    def __init__(self, raw_dir: str | Path):
        self.root = Path(raw_dir)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise BankError(
                f"{path}: asset bank not found; run the pull stage for the procedural source first"
            )
        try:
            self.manifest = json.loads(path.read_text())
            self.figure_pools = self.manifest["figures"]
            self.background_pools = self.manifest["backgrounds"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BankError(f"{path}: not an asset-bank manifest ({exc})") from exc

    def figures(self, pool: str) -> list[str]:
        ids = self.figure_pools.get(pool) or []
        if not ids:
            raise BankError(f"{self.root}: the bank has no figures in pool {pool!r}")
        return ids

    def backgrounds(self, pool: str) -> list[str]:
        ids = self.background_pools.get(pool) or []
        if not ids:
            raise BankError(f"{self.root}: the bank has no backgrounds in pool {pool!r}")
        return ids

    @functools.lru_cache(maxsize=512)  # noqa: B019  (one bank per process; the cache is the point)
    def figure(self, ident: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(rgb uint8 [h, w, 3], alpha uint8 [h, w], meta) of a stored figure."""
        folder = self.root / "fg" / ident
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise BankError(f"{meta_path}: missing figure metadata")
        rgb, alpha = read_rgb(folder / "image.png"), read_gray(folder / "alpha.png")
        if rgb.shape[:2] != alpha.shape:
            raise BankError(f"{folder}: image.png {rgb.shape[:2]} and alpha.png {alpha.shape} differ in size")
        return rgb, alpha, json.loads(meta_path.read_text())

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def background(self, ident: str) -> np.ndarray:
        return read_rgb(self.root / "bg" / f"{ident}.jpg")

    def background_frame(self, ident: str, frame: int) -> np.ndarray:
        """Backgrounds are stills; the video camera pans over them."""
        return self.background(ident)

    def aspect(self, ident: str) -> float:
        return float(self.manifest.get("aspect", {}).get(ident, 0.5))

    def clip_length(self, ident: str) -> int | None:
        """Figures are animated by rendering, so any number of frames is available."""
        return None

    def figure_frame(self, ident: str, height: float, frame: int, fps: float, window: tuple[int, int] = (0, 1)
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float]:
        """The figure rendered ``height`` px tall at time ``frame / fps``: (rgb, alpha, anchor, scale 1)."""
        fig = render_figure(self.figure(ident)[2]["spec"], height, frame / fps)
        return fig.rgb, fig.alpha, fig.anchor, 1.0


def open_bank(raw_dir: str | Path):
    """The asset bank in ``raw_dir``, procedural or real sources, by its manifest's generator."""
    path = Path(raw_dir) / "manifest.json"
    if not path.is_file():
        raise BankError(f"{path}: asset bank not found; run the pull stage first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BankError(f"{path}: not an asset-bank manifest ({exc})") from exc
    if manifest.get("generator") == "maggie.data.real_sources":
        from maggie.data.synth.real_sources import RealAssetBank

        return RealAssetBank(raw_dir, manifest)
    return AssetBank(raw_dir)
