"""The report's figures: bars per mask source and method, training and validation curves, matte grids."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from maggie.config.params import section
from maggie.files import write_figure, write_png

METHODS = ("maggie", "mask_as_alpha")


def comparison_grid(params: dict[str, Any], methods: list[str], report_dir: Path) -> None:
    """The same test images' previews for every method, one block per method."""
    import cv2

    from maggie.drawing import grid

    out_dir = Path(section(params, "test")["out_dir"]) / "previews"
    img = section(params, "test.image")
    stem = Path("image") / img["subsets"][0] / f"{img['mask_sources'][0]}.png"
    rows = []
    for m in methods:
        if m == "mask_as_alpha":  # every block's second column is the guidance mask already
            continue
        path = out_dir / stem if m in METHODS else out_dir / "methods" / m / stem
        tile = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if tile is not None:
            rows.append([cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)])
    if rows:
        write_png(report_dir / "methods_grid.png", grid(rows, tile_height=min(r[0].shape[0] for r in rows)))


def bar_plot(path: Path, labels: list[str], series: dict[str, list[float]], title: str) -> None:
    """A grouped bar chart as PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels)), 3.5), dpi=100)
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(labels))
    for i, (name, vals) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    write_figure(path, fig)


def curve_plot(path: Path, curves: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, p in curves.items():
        if not p.exists():
            continue
        with p.open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    write_figure(path, fig)


def validation_plot(path: Path, curves: dict[str, Path]) -> None:
    """Validation MAD against steps, each stage's next to its mask-as-alpha line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for i, (name, p) in enumerate(curves.items()):
        rows = list(csv.DictReader(p.open())) if p.exists() else []
        rows = [r for r in rows if r.get("MAD")]
        if not rows:
            continue
        steps = [int(r["step"]) for r in rows]
        ax.plot(steps, [float(r["MAD"]) for r in rows], marker="o", color=f"C{i}", label=f"{name}: MaGGIe")
        if rows[0].get("mask_MAD"):
            ax.plot(steps, [float(r["mask_MAD"]) for r in rows], ls="--", color=f"C{i}", label=f"{name}: mask as alpha")
    ax.set_xlabel("step")
    ax.set_ylabel("validation MAD")
    ax.legend(fontsize=7)
    write_figure(path, fig)


def preview_grid(out_dir: Path, report_dir: Path) -> None:
    import cv2

    from maggie.drawing import grid

    tiles = sorted((out_dir / "previews").rglob("*.png"))[:6]
    rows = []
    for t in tiles:
        img = cv2.imread(str(t), cv2.IMREAD_COLOR)
        if img is not None:
            rows.append([cv2.cvtColor(img, cv2.COLOR_BGR2RGB)])
    if rows:
        write_png(report_dir / "mattes_grid.png", grid(rows, tile_height=min(r[0].shape[0] for r in rows)))
