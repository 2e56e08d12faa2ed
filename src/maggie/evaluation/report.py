"""Report stage: gather every evaluation into ``metrics.json``, paper-style tables, plots and a grid.

``metrics.json`` is what ``dvc metrics diff`` compares.  The tables follow the paper's
layout: one row per (subset, mask source) with MaGGIe and the mask-as-alpha reference,
the mean (and standard deviation) over mask sources per subset, and one row per video
split.  ``comparison.md`` (and ``metrics.json``'s ``comparison``) puts every method of
``methods`` beside MaGGIe: mean (std over mask sources) per subset and one row per split,
with plots of each metric per mask source per method and ``methods_grid.png``.
Plots are written both as CSV (for ``dvc plots``) and as PNG images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from maggie.config.params import ParamsError, load_params, section
from maggie.files import write_figure, write_json, write_png, write_text

log = logging.getLogger("maggie.report")
METHODS = ("maggie", "mask_as_alpha")


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ParamsError(f"{path}: missing or unreadable evaluation result ({exc.__class__.__name__})") from exc


def gather(params: dict[str, Any]) -> dict[str, Any]:
    test = section(params, "test")
    out_dir = Path(test["out_dir"])
    img, vid = section(params, "test.image"), section(params, "test.video")
    image_rows = [
        _load(out_dir / "image" / s / f"{m}.json") for s in img["subsets"] for m in img["mask_sources"]
    ]
    video_rows = [_load(out_dir / "video" / f"{s}.json") for s in vid["splits"]]
    return {"image": image_rows, "video": video_rows}


def compared_methods(params: dict[str, Any]) -> list[str]:
    """Every method in the comparison, in table order."""
    methods = params.get("methods") or {}
    return ["maggie", "mask_as_alpha", *(methods.get("references") or []), *(methods.get("baselines") or [])]


def gather_methods(params: dict[str, Any], rows: dict[str, Any]) -> dict[str, Any]:
    """Per method, its image rows (subset x source) and video rows (split), MaGGIe's and the mask's included."""
    out_dir = Path(section(params, "test")["out_dir"])
    img, vid = section(params, "test.image"), section(params, "test.video")
    table: dict[str, Any] = {}
    for m in compared_methods(params):
        if m in METHODS:
            table[m] = {"image": [{**r, "values": r[m]} for r in rows["image"]],
                        "video": [{**r, "values": r[m]} for r in rows["video"]]}
            continue
        base = out_dir / "methods" / m
        image = [_load(base / "image" / s / f"{src}.json") for s in img["subsets"] for src in img["mask_sources"]]
        video = [_load(base / "video" / f"{s}.json") for s in vid["splits"]]
        table[m] = {"image": [{**r, "values": r[m]} for r in image], "video": [{**r, "values": r[m]} for r in video]}
    return table


def comparison(table: dict[str, Any], params: dict[str, Any], names: list[str], vid_names: list[str]
               ) -> tuple[dict[str, Any], str]:
    """Mean (std over mask sources) per method and subset, and per method and split, as metrics and markdown."""
    subsets = section(params, "test.image")["subsets"]
    splits = section(params, "test.video")["splits"]
    summary: dict[str, Any] = {}
    header = ["method", "subset"] + names
    md = ["### Images: mean (std) over mask sources", "", "| " + " | ".join(header) + " |",
          "|" + "---|" * len(header)]
    for subset in subsets:
        for m, entry in table.items():
            vals = {n: [r["values"][n] for r in entry["image"] if r["subset"] == subset] for n in names}
            summary.setdefault(m, {"image": {}, "video": {}})["image"][subset] = {
                **{n: float(np.mean(v)) for n, v in vals.items()},
                **{f"{n}_std": float(np.std(v)) for n, v in vals.items()}}
            md.append("| " + " | ".join([m, subset] + [f"{np.mean(v):.2f} ({np.std(v):.2f})"
                                                       for v in vals.values()]) + " |")
    header = ["method", "split"] + vid_names
    md += ["", "### Video", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split in splits:
        for m, entry in table.items():
            row = next(r for r in entry["video"] if r["split"] == split)["values"]
            summary[m]["video"][split] = {n: float(row[n]) for n in vid_names}
            md.append("| " + " | ".join([m, split] + [f"{row[n]:.2f}" for n in vid_names]) + " |")
    return summary, "\n".join(md) + "\n"


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


def summarise(rows: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    img = section(params, "test.image")
    metrics: dict[str, Any] = {"image": {}, "video": {}}
    for subset in img["subsets"]:
        sub = [r for r in rows["image"] if r["subset"] == subset]
        entry = {}
        for method in METHODS:
            names = sub[0][method].keys()
            entry[method] = {n: float(np.mean([r[method][n] for r in sub])) for n in names}
            entry[method].update({f"{n}_std": float(np.std([r[method][n] for r in sub])) for n in names})
        entry["mad_reduction_vs_mask"] = 1.0 - entry["maggie"]["MAD"] / max(entry["mask_as_alpha"]["MAD"], 1e-12)
        metrics["image"][subset] = entry
    for r in rows["video"]:
        entry = {m: {k: float(v) for k, v in r[m].items()} for m in METHODS}
        entry["mad_reduction_vs_mask"] = 1.0 - entry["maggie"]["MAD"] / max(entry["mask_as_alpha"]["MAD"], 1e-12)
        metrics["video"][r["split"]] = entry
    return metrics


def image_table(rows: list[dict[str, Any]], metrics: dict[str, Any], names: list[str]) -> tuple[str, str]:
    header = ["subset", "mask source", "method"] + names
    csv_lines = [",".join(header)]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        for m in METHODS:
            vals = [f"{r[m][n]:.2f}" for n in names]
            csv_lines.append(",".join([r["subset"], r["source"], m] + vals))
            md.append("| " + " | ".join([r["subset"], r["source"], m] + vals) + " |")
    for subset, entry in metrics["image"].items():
        for m in METHODS:
            vals = [f"{entry[m][n]:.2f} ({entry[m][n + '_std']:.2f})" for n in names]
            csv_lines.append(",".join([subset, "mean (std)", m] + [v.replace(",", ";") for v in vals]))
            md.append("| " + " | ".join([f"**{subset}**", "mean (std)", m] + vals) + " |")
    return "\n".join(csv_lines) + "\n", "\n".join(md) + "\n"


def video_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    header = ["split", "method"] + names
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        for m in METHODS:
            md.append("| " + " | ".join([r["split"], m] + [f"{r[m][n]:.2f}" for n in names]) + " |")
    return "\n".join(md) + "\n"


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
    import csv

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


def qualitative_section(q_dir: Path, report_dir: Path) -> str:
    """Markdown for the set without alpha: its previews and stability plots (copied into the report)
    and a table of each person's mean frame-to-frame matte change against that of its mask."""
    import shutil

    summary_path = q_dir / "summary.json"
    if not summary_path.is_file():
        return ""
    summary = _load(summary_path)
    if not summary["videos"] and not summary["images"]:
        return ""
    dest = report_dir / "qualitative"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    lines = [f"## Qualitative set (no alpha): `{summary['dir']}`", "",
             "Mean absolute frame-to-frame change per person (x1e3), matte vs its guidance mask:", "",
             "| video | frames | person | matte change | mask change |", "| --- | --- | --- | --- | --- |"]
    for video, row in summary["videos"].items():
        for i, (a, m) in enumerate(zip(row["matte_change_mean"], row["mask_change_mean"], strict=True)):
            lines.append(f"| {video} | {row['frames']} | {i} | {1e3 * a:.2f} | {1e3 * m:.2f} |")
    lines.append("")
    for png in sorted(q_dir.glob("*.png")):
        shutil.copy2(png, dest / png.name)
        lines.append(f"![{png.stem}](qualitative/{png.name})")
    return "\n".join(lines) + "\n"


def run(params_path: str) -> dict[str, Any]:
    params = load_params(params_path)
    test = section(params, "test")
    report_dir = Path(test["report_dir"])
    rows = gather(params)
    metrics = summarise(rows, params)
    names = list(test["metrics"])
    vid_names = names + list(section(params, "test.video").get("extra_metrics", []))
    table = gather_methods(params, rows)
    metrics["comparison"], md_compare = comparison(table, params, names, vid_names)
    write_json(Path(test["metrics_file"]), metrics)
    write_text(report_dir / "comparison.md", "## Method comparison\n\n" + md_compare)
    csv_text, md_image = image_table(rows["image"], metrics, names)
    write_text(report_dir / "image_table.csv", csv_text)
    md_video = video_table(rows["video"], vid_names)
    qualitative = section(test, "qualitative") if "qualitative" in test else {}
    md_qual = qualitative_section(Path(qualitative.get("out_dir") or "eval/qualitative"), report_dir)
    write_text(report_dir / "tables.md", "## Images\n\n" + md_image + "\n## Video\n\n" + md_video
               + ("\n" + md_qual if md_qual else ""))
    per_source = [",".join(["subset", "source"] + [f"{m}_MAD" for m in table])] + [
        ",".join([r["subset"], r["source"]] + [f"{table[m]['image'][i]['values']['MAD']:.4f}" for m in table])
        for i, r in enumerate(rows["image"])]
    write_text(report_dir / "mad_per_source.csv", "\n".join(per_source) + "\n")
    labels = [f"{r['subset']}/{r['source']}" for r in rows["image"]]
    for n in names:
        bar_plot(report_dir / ("mad_per_source.png" if n == "MAD" else f"{n.lower()}_per_source.png"), labels,
                 {m: [r["values"][n] for r in table[m]["image"]] for m in table}, f"{n} per subset and mask source")
    comparison_grid(params, list(table), report_dir)
    bar_plot(report_dir / "video_mad.png", [r["split"] for r in rows["video"]],
             {m: [r["values"]["MAD"] for r in table[m]["video"]] for m in table}, "Video MAD per split")
    curve_plot(report_dir / "training_curves.png",
               {s: Path(section(params, f"train.{s}")["out_dir"]) / "train_curve.csv" for s in ("image", "video")})
    preview_grid(Path(test["out_dir"]), report_dir)
    for kind in ("image", "video"):
        for name, e in metrics[kind].items():
            log.info("%s %s: MAD %.3f vs mask %.3f (%.0f%% lower)", kind, name, e["maggie"]["MAD"],
                     e["mask_as_alpha"]["MAD"], 100 * e["mad_reduction_vs_mask"])
    return metrics
