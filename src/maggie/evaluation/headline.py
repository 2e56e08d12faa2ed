"""The report's opening table: the trained network against its own guidance, per subset and split.

For every image subset (mean over its mask sources) and every video split: MaGGIe's MAD, the
guidance mask's MAD (the mask used as the alpha), their ratio and in how many evaluations MaGGIe is
the lower; the warm start the default's training started from, when it did, measured on the same
benchmarks; and the video stage's dtSSD next to its image stage run frame by frame (what the
temporal part of the network adds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

RATIO_TARGET = 0.7  # the ratio the embedded default is meant to reach on each subset and split mean


def image_summary(rows: list[dict[str, Any]], subset: str, method: str = "maggie") -> dict[str, Any]:
    sub = [r for r in rows if r["subset"] == subset]
    mad = float(np.mean([r[method]["MAD"] for r in sub]))
    mask = float(np.mean([r["mask_as_alpha"]["MAD"] for r in sub]))
    return {"MAD": mad, "mask_MAD": mask, "ratio": mad / max(mask, 1e-12), "evaluations": len(sub),
            "wins": int(sum(r[method]["MAD"] < r["mask_as_alpha"]["MAD"] for r in sub))}


def video_summary(row: dict[str, Any], method: str = "maggie") -> dict[str, Any]:
    mad, mask = float(row[method]["MAD"]), float(row["mask_as_alpha"]["MAD"])
    out = {"MAD": mad, "mask_MAD": mask, "ratio": mad / max(mask, 1e-12), "evaluations": 1, "wins": int(mad < mask)}
    if "dtSSD" in row[method]:
        out["dtSSD"] = float(row[method]["dtSSD"])
    return out


def warm_start_record(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The shipped warm start's own metrics, when this run's image stage started from it."""
    if not path.is_file():
        return None
    from maggie.config.methods import init_sources

    record = json.loads(path.read_text())
    used = any(Path(s).name == record["image"]["file"] for s in init_sources(params, "image"))
    return record if used else None


def headline(rows: dict[str, Any], params: dict[str, Any], frames: dict[str, dict[str, Any]],
             warm: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """(the ``headline`` section of metrics.json, the markdown table)."""
    test = params["test"]
    entries: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    for subset in test["image"]["subsets"]:
        ws = (warm or {}).get("image", {}).get("metrics", {}).get(subset)
        entries.append(("image", subset, image_summary(rows["image"], subset), ws))
    for r in rows["video"]:
        ws = (warm or {}).get("video", {}).get("metrics", {}).get(r["split"])
        entries.append(("video", r["split"], video_summary(r), ws))
    summary: dict[str, Any] = {"image": {}, "video": {}}
    header = "| evaluation | MaGGIe MAD | mask MAD | ratio | below the mask in |"
    rule = "| --- | --- | --- | --- | --- |"
    if warm:
        header += " warm start MAD | warm start ratio |"
        rule += " --- | --- |"
    intro = ("MAD (the reference code's scale, as in the paper's tables) of the trained network and of the "
             "guidance mask used as the alpha; images: the mean over the subset's mask sources; ratio = MaGGIe / "
             f"mask (below 1 beats the mask; the embedded default aims at {RATIO_TARGET} or lower).")
    lines = ["## MaGGIe against its guidance", "", intro, "", header, rule]
    for kind, name, s, ws in entries:
        summary[kind][name] = {**s, **({"warm_start": ws} if ws else {})}
        label = f"{kind} {name}" + (f" (mean of {s['evaluations']})" if kind == "image" else "")
        line = (f"| {label} | {s['MAD']:.0f} | {s['mask_MAD']:.0f} | {s['ratio']:.2f} | "
                f"{s['wins']}/{s['evaluations']} |")
        if warm:
            line += (f" {ws['MAD']:.0f} | {ws['ratio']:.2f} |" if ws else " | |")
        lines.append(line)
    total = sum(s["evaluations"] for _, _, s, _ in entries)
    wins = sum(s["wins"] for _, _, s, _ in entries)
    worst = max(s["ratio"] for _, _, s, _ in entries)
    summary["below_mask"] = {"evaluations": total, "wins": wins, "worst_mean_ratio": worst}
    lines += ["", f"Below the mask in {wins} of {total} evaluations; the worst subset or split mean is "
              f"{worst:.2f}x the mask's."]
    if frames:
        lines += ["", "Temporal consistency (dtSSD, the reference's scale; lower is steadier): the video stage "
                  "against its image stage run frame by frame on the same clips.", "",
                  "| split | video stage dtSSD | image stage dtSSD | video stage MAD | image stage MAD |",
                  "| --- | --- | --- | --- | --- |"]
        summary["video_vs_image_stage"] = {}
        for r in rows["video"]:
            f = frames.get(r["split"])
            if f is None or "dtSSD" not in r["maggie"]:
                continue
            v, i = r["maggie"], f["maggie_frames"]
            summary["video_vs_image_stage"][r["split"]] = {
                "dtSSD": float(v["dtSSD"]), "image_dtSSD": float(i["dtSSD"]), "MAD": float(v["MAD"]),
                "image_MAD": float(i["MAD"])}
            lines.append(f"| {r['split']} | {v['dtSSD']:.2f} | {i['dtSSD']:.2f} | {v['MAD']:.0f} | {i['MAD']:.0f} |")
    if warm:
        lines += ["", f"The warm start: `pretrain/{warm['image']['file']}` ({warm['image']['steps']} image steps"
                  + (f", then {warm['video']['steps']} video steps" if warm.get("video") else "")
                  + (f" in its last phase, {warm['trained_with']}" if warm.get("trained_with") else "")
                  + f"; made by `{warm['command']}`), measured on the same benchmarks "
                  + ("with this evaluation (`python -m maggie.engine.warm_start --remeasure`)."
                     if warm.get("measured_with") else "when it was made.")]
    return summary, "\n".join(lines) + "\n"
