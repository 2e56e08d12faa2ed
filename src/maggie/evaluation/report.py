"""Report stage: gather every evaluation into ``metrics.json``, paper-style tables, plots and a grid.

``tables.md`` opens with the headline table (``maggie.evaluation.headline``): MaGGIe against its own
guidance, per subset and split, with the warm start it started from and the video stage's dtSSD next
to its image stage's.

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

from maggie.config.methods import IMAGE_STAGE_ON_VIDEO, frame_zero_guided
from maggie.config.params import ParamsError, load_params, section
from maggie.evaluation.headline import headline, warm_start_record
from maggie.evaluation.report_figures import bar_plot, comparison_grid, curve_plot, preview_grid, validation_plot
from maggie.evaluation.report_tables import (
    comparison,
    guidance_table,
    image_table,
    qualitative_section,
    video_table,
)
from maggie.files import write_json, write_text

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


def gather_frames(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The image stage run frame by frame on each video split, where it was evaluated."""
    base = Path(section(params, "test")["out_dir"]) / "methods" / IMAGE_STAGE_ON_VIDEO / "video"
    splits = section(params, "test.video")["splits"]
    return {s: _load(base / f"{s}.json") for s in splits if (base / f"{s}.json").is_file()}


def gather_tracked(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The video network on this project's tracked guidance: per tracker, per split, with the tracker's IoU."""
    out_dir = Path(section(params, "test")["out_dir"])
    vid = section(params, "test.video")
    tracked: dict[str, dict[str, Any]] = {}
    for t in vid.get("tracked_masks") or []:
        tracked[t] = {s: _load(out_dir / "video_masks" / t / f"{s}.json") for s in vid["splits"]}
        summary = _load(out_dir / "tracked_masks" / t / "summary.json")
        tracked[t]["_iou"] = {s: v["mean_iou"] for s, v in summary["splits"].items()}
    return tracked


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
    guided = [m for m in (section(params, "methods").get("baselines") or []) if frame_zero_guided(params, m)]
    if guided:
        source = {"alpha": "a trimap from frame 0's true alpha (the MaGGIe paper's protocol, 'first trimap')",
                  "mask": "a trimap from frame 0's guidance mask"}[section(params, "methods")["first_frame_guidance"]]
        md_compare += (f"\nOn the videos {', '.join(guided)} see frame 0 only: {source} "
                       "(`methods.first_frame_guidance`); every other method gets a guidance mask on every frame.\n")
    write_text(report_dir / "comparison.md", "## Method comparison\n\n" + md_compare)
    csv_text, md_image = image_table(rows["image"], metrics, names)
    write_text(report_dir / "image_table.csv", csv_text)
    frames = gather_frames(params)
    md_video = video_table(rows["video"], vid_names, frames)
    tracked = gather_tracked(params)
    if tracked:
        metrics["video_guidance"], md_guidance = guidance_table(rows["video"], tracked)
        md_video += ("\nBy guidance source: the test data's masks, and this project's tracker (`maggie masks`) "
                     "from the true first-frame masks (`test.video.tracked_masks`; tracker IoU: with the true "
                     "masks, over all frames).\n\n" + md_guidance)
    warm = warm_start_record(Path("pretrain") / "warm_start.json", params)
    metrics["headline"], md_headline = headline(rows, params, frames, warm)
    write_json(Path(test["metrics_file"]), metrics)
    qualitative = section(test, "qualitative") if "qualitative" in test else {}
    md_qual = qualitative_section(Path(qualitative.get("out_dir") or "eval/qualitative"), report_dir)
    write_text(report_dir / "tables.md", md_headline + "\n## Images\n\n" + md_image + "\n## Video\n\n" + md_video
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
    validation_plot(report_dir / "validation_curves.png",
                    {s: Path(section(params, f"train.{s}")["out_dir"]) / "val_curve.csv" for s in ("image", "video")})
    preview_grid(Path(test["out_dir"]), report_dir)
    for kind in ("image", "video"):
        for name, e in metrics[kind].items():
            log.info("%s %s: MAD %.3f vs mask %.3f (%.0f%% lower)", kind, name, e["maggie"]["MAD"],
                     e["mask_as_alpha"]["MAD"], 100 * e["mad_reduction_vs_mask"])
    return metrics
