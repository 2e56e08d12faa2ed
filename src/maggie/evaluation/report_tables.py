"""The report's tables: per benchmark, per subset and split, the method comparison, the qualitative set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from maggie.config.params import section

METHODS = ("maggie", "mask_as_alpha")  # the rows of every evaluation file


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


def video_table(rows: list[dict[str, Any]], names: list[str], frames: dict[str, dict[str, Any]] | None = None) -> str:
    """One row per split and method; ``frames``: the image stage run frame by frame on the same split."""
    header = ["split", "method"] + names
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        for m in METHODS:
            md.append("| " + " | ".join([r["split"], m] + [f"{r[m][n]:.2f}" for n in names]) + " |")
        f = (frames or {}).get(r["split"])
        if f is not None:
            md.append("| " + " | ".join([r["split"], "maggie image stage, frame by frame"]
                                        + [f"{f['maggie_frames'][n]:.2f}" for n in names]) + " |")
    return "\n".join(md) + "\n"


def guidance_table(rows: list[dict[str, Any]], tracked: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The video network per split and guidance source: the test data's masks (``rows``) and this project's
    tracker (``tracked[tracker][split]``, see ``maggie.evaluation.tracked_masks``); MAD and dtSSD of
    MaGGIe and the guidance's MAD as the alpha."""
    summary: dict[str, Any] = {}
    md = ["| split | guidance | MaGGIe MAD | guidance MAD | ratio | MaGGIe dtSSD | tracker IoU |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sources = {"test data": (r, None)} | {t: (per[r["split"]], per.get("_iou", {}).get(r["split"]))
                                              for t, per in tracked.items() if r["split"] in per}
        for name, (row, iou) in sources.items():
            mad, mask = row["maggie"]["MAD"], row["mask_as_alpha"]["MAD"]
            dt = row["maggie"].get("dtSSD")
            summary.setdefault(r["split"], {})[name] = {"MAD": mad, "mask_MAD": mask, "dtSSD": dt, "tracker_iou": iou}
            md.append(f"| {r['split']} | {name} | {mad:.0f} | {mask:.0f} | {mad / max(mask, 1e-12):.2f} | "
                      f"{'' if dt is None else f'{dt:.3f}'} | {'' if iou is None else f'{iou:.3f}'} |")
    return summary, "\n".join(md) + "\n"


def qualitative_section(q_dir: Path, report_dir: Path) -> str:
    """Markdown for the set without alpha: its previews and stability plots (copied into the report)
    and a table of each person's mean frame-to-frame matte change against that of its mask."""
    summary_path = q_dir / "summary.json"
    if not summary_path.is_file():
        return ""
    import json

    summary = json.loads(summary_path.read_text())
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
