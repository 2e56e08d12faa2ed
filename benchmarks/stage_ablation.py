"""What a change does to the default's own training stages: each row reruns one stage of the default with
overrides of params.yaml in a scratch folder, from the same inputs, and measures the result.

    python benchmarks/stage_ablation.py --only video_sum_one      # one row
    python benchmarks/stage_ablation.py                           # every row not yet in the JSON

Run it in a checkout where `dvc repro` has made the data and the image stage (``models/image/best.safetensors``:
the video rows start from it, as the default's video stage does; "image+video" rows train both stages, the
video stage from the row's own image stage, and are measured as both kinds of row are).  Image rows: the image
stage from the warm start, then the mean MAD over the 10 mask sources of each image subset against the guidance mask's
(``benchmarks/against_mask.py``).  Video rows: the video stage, then MAD and dtSSD on the three video splits,
next to the image stage run frame by frame (``benchmarks/video_against_image.py``).  Results go to
``benchmarks/stage_ablation.json`` and ``benchmarks/stage_ablation.md``.  Two runs of one row differ by up
to 0.5% (CPU training is not bit-reproducible here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.presets import deep_merge  # noqa: E402
from maggie.data.layout import DATASET_DIRS  # noqa: E402

SUM_ONE_OFF = {"model": {"image": {"loss_sum_one_w": 0.0}, "video": {"loss_sum_one_w": 0.0}}}
# (name, stage, what the row changes, overrides of params.yaml)
ROWS = [
    ("image_before", "image", "the image stage before this change: no sum term, batch norms re-estimated",
     deep_merge(SUM_ONE_OFF, {"train": {"image": {"frozen_bn_stats": False}}})),
    ("image_sum_one_frozen_bn", "image", "+ mattes add up to at most 1 (loss_sum_one_w 1), batch-norm statistics kept",
     {"model": {"image": {"loss_sum_one_w": 1.0}}, "train": {"image": {"frozen_bn_stats": True}}}),
    ("image_phase3", "image", "the default's image stage from the phase 3 warm start (test.sum_to_one)", {}),
    ("image_phase3_lr1e-5", "image", "as image_phase3, learning rate 1e-5 instead of 5e-5",
     {"train": {"image": {"lr": 1.0e-5}}}),
    ("image_phase3_occlusion4", "image", "as image_phase3, a person's pixels of other people weigh 5x "
     "(loss_occlusion_w 4)", {"model": {"image": {"loss_occlusion_w": 4.0}}}),
    ("image_phase3_occlusion4_lr1e-5", "image", "as image_phase3_occlusion4, learning rate 1e-5 instead of 5e-5",
     {"model": {"image": {"loss_occlusion_w": 4.0}}, "train": {"image": {"lr": 1.0e-5}}}),
    ("image_phase3_occlusion8", "image", "as image_phase3, a person's pixels of other people weigh 9x "
     "(loss_occlusion_w 8)", {"model": {"image": {"loss_occlusion_w": 8.0}}}),
    ("video_before", "video", "the video stage before this change (no sum term)", SUM_ONE_OFF),
    ("video_sum_one", "video", "+ mattes add up to at most 1 (loss_sum_one_w 1)",
     {"model": {"video": {"loss_sum_one_w": 1.0}}}),
    ("video_phase3", "video", "the default's video stage from the phase 3 warm start (test.sum_to_one)", {}),
    ("video_phase3_init_warm", "video", "as video_phase3, started from the warm start's image part instead of the "
     "image stage's", {"train": {"video": {"init": ["pretrain/maggie_default_image.safetensors",
                                                    "pretrain/maggie_default_temporal.safetensors"]}}}),
    ("video_phase3_lr1e-5", "video", "as video_phase3, learning rate 1e-5 instead of 5e-5",
     {"train": {"video": {"lr": 1.0e-5}}}),
    ("video_phase3_occlusion4", "video", "as video_phase3, a person's pixels of other people weigh 5x "
     "(loss_occlusion_w 4)", {"model": {"video": {"loss_occlusion_w": 4.0}}}),
    ("image_occlusion2", "image", "the default's image stage with the occlusion weight 2 instead of 4 "
     "(loss_occlusion_w 2)", {"model": {"image": {"loss_occlusion_w": 2.0}}}),
    ("video_guided", "video", "the default's video stage, evaluated with test.sum_to_one guided", {}),
    ("video_guided_lr1e-5", "video", "as video_guided, learning rate 1e-5 instead of 5e-5",
     {"train": {"video": {"lr": 1.0e-5}}}),
    ("video_guided_lr1e-5_dtssd5", "video", "as video_guided_lr1e-5, dtSSD loss weight 5 instead of 1",
     {"train": {"video": {"lr": 1.0e-5}}, "model": {"video": {"loss_dtSSD_w": 5.0}}}),
    ("video_140_steps", "video", "the default's video stage (lr 1e-5, dtSSD weight 5) with 140 steps instead of 200",
     {"train": {"video": {"max_iter": 140}}}),
    ("video_100_steps", "video", "the default's video stage with 100 steps instead of 140",
     {"train": {"video": {"max_iter": 100}}}),
    ("video_60_steps", "video", "the default's video stage with 60 steps instead of 140",
     {"train": {"video": {"max_iter": 60}}}),
    ("video_full_frames_35", "video", "the default's video stage on whole 192x256 frames (crop [192, 256]) for 35 "
     "steps instead of 128x128 crops for 100 (about the same pixels)",
     {"dataset": {"train": {"video": {"crop": [192, 256]}}}, "train": {"video": {"max_iter": 35}}}),
    ("video_scale_256", "video", "the default's video stage on clips upscaled to short side 256 (dataset.train.video"
     ".short_size) and evaluated there (test.short_size 256; the test frames are 192 x 256)",
     {"dataset": {"train": {"video": {"short_size": 256}}}, "test": {"short_size": 256}}),
    ("video_hard_levels", "video", "the default's video stage on training videos of levels easy / medium / hard "
     "0.1 / 0.4 / 0.5 instead of 0.2 / 0.5 / 0.3 (resynthesised)",
     {"data": {"video_train": {"level_weights": {"comp_easy": 0.1, "comp_medium": 0.4, "comp_hard": 0.5}}}}),
    ("video_tracker_guidance_1", "video", "the default's video stage with every training clip guided by the simulated "
     "tracker's masks (dataset.train.video.tracker_guidance_p 1.0 instead of 0.5), as the test clips are",
     {"dataset": {"train": {"video": {"tracker_guidance_p": 1.0}}}}),
    ("video_tracker_guidance_1_lr3e-5", "video", "as video_tracker_guidance_1, learning rate 3e-5 instead of 1e-5",
     {"dataset": {"train": {"video": {"tracker_guidance_p": 1.0}}}, "train": {"video": {"lr": 3.0e-5}}}),
    ("video_grad_w_0.5", "video", "the default's video stage with the alpha gradient loss weight 0.5 instead of 0.05 "
     "(sharper edges where people meet)", {"model": {"video": {"loss_alpha_grad_w": 0.5}}}),
    ("both_meeting4", "image+video", "the default's image and video stages with the band where two people meet "
     "weighing 5x (loss_meeting_w 4 in both)", {"model": {"image": {"loss_meeting_w": 4.0},
                                                          "video": {"loss_meeting_w": 4.0}}}),
    ("both_meeting8", "image+video", "as both_meeting4 with the weight 8 (the band weighs 9x)",
     {"model": {"image": {"loss_meeting_w": 8.0}, "video": {"loss_meeting_w": 8.0}}}),
    ("phase5_meeting4", "image+video", "as both_meeting4, from the phase 5 warm start (presets/pretrain5.yaml)",
     {"model": {"image": {"loss_meeting_w": 4.0}, "video": {"loss_meeting_w": 4.0}}}),
    ("phase5_image_meeting0", "image", "the default's image stage from the phase 5 warm start without the meeting "
     "band's weight (loss_meeting_w 0)", {"model": {"image": {"loss_meeting_w": 0.0}}}),
]
# rows whose overrides change one of these sections resynthesise that dataset in the row's folder
SYNTHESISED = ("video_train", "image_train")


def run_row(name: str, stage: str, overrides: dict, work: Path) -> dict:
    d = work / name
    (d / "models").mkdir(parents=True, exist_ok=True)
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remade = [k for k in SYNTHESISED if k in overrides.get("data", {})]
    remade_dirs = {DATASET_DIRS[k] for k in remade}
    links = ("pretrain",) + (("models/image",) if stage == "video" else ())
    if remade:  # the row's own copy of the changed datasets, the rest linked
        (d / "data").mkdir(exist_ok=True)
        links += tuple(f"data/{p.name}" for p in (REPO / "data").iterdir()
                       if p.name not in remade_dirs)
    else:
        links += ("data",)
    for link in links:
        if not (d / link).exists():
            os.symlink(REPO / link, d / link)
    for key in remade:
        with open(d / f"synthesize_{key}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "maggie.stages.synthesize", key, "--params", "params.yaml"],
                           cwd=d, check=True, stdout=log, stderr=subprocess.STDOUT)
    from maggie.files import sha256_file

    warm = sha256_file(REPO / "pretrain" / "maggie_default_image.safetensors")[:8]
    start = time.time()
    for part in stage.split("+"):
        with open(d / f"train_{part}.log", "w") as log:
            subprocess.run([sys.executable, "-m", f"maggie.stages.train_{part}", "--params", "params.yaml"], cwd=d,
                           check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    result = {"train_s": round(seconds), "warm_start": warm, "sum_to_one": params["test"].get("sum_to_one")}
    if "image" in stage.split("+"):
        out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "against_mask.py"),
                              "models/image/best.safetensors", "--params", "params.yaml"], cwd=d, check=True,
                             capture_output=True, text=True).stdout
        result["image_metrics" if stage != "image" else "metrics"] = json.loads(out)
        if stage == "image":
            return result
    image = str((d if stage != "video" else REPO) / "models" / "image" / "best.safetensors")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "video_against_image.py"), image,
                          "--video", "models/video/best.safetensors", "--params", "params.yaml"], cwd=d, check=True,
                         capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        split, _, payload = line.partition(" ")
        rows[split] = json.loads(payload)
    result["metrics"] = rows
    return result


def write_table(results: dict, path: Path) -> None:
    lines = ["# The default's own stages, one change at a time", "",
             "Rows from `python benchmarks/stage_ablation.py` (see its docstring): each reruns one stage of the",
             "default from the same inputs with the row's overrides.  Image: mean MAD over the 10 mask sources",
             "(ratio to the guidance mask).  Video: MAD (ratio to the tracker mask) and dtSSD of the video stage;",
             "the image stage run frame by frame in brackets.  warm start: the first 8 hex digits of the SHA256 of",
             "the `pretrain/maggie_default_image.safetensors` the row started from (rows compare only on one).", ""]
    lines += ["| row | change | warm start | in_dist | held_out |", "| --- | --- | --- | --- | --- |"]
    for name, stage, what, _ in ROWS:
        r = results.get(name)
        if stage != "video" and r:
            m = r["metrics"] if stage == "image" else r["image_metrics"]
            cells = [f"{m[s]['MAD']:.0f} ({m[s]['ratio']:.3f})" for s in ("in_dist", "held_out")]
            lines.append(f"| {name} | {what} | {r['warm_start']} | " + " | ".join(cells) + " |")
    lines += ["", "| row | change | warm start | comp_easy MAD, dtSSD | comp_medium MAD, dtSSD "
              "| comp_hard MAD, dtSSD |", "| --- | --- | --- | --- | --- | --- |"]
    for name, stage, what, _ in ROWS:
        r = results.get(name)
        if stage != "image" and r:
            cells = []
            for split in ("comp_easy", "comp_medium", "comp_hard"):
                row = r["metrics"][split]
                video = next(v for k, v in row.items() if k.endswith("best.safetensors"))
                frames, mask = row["image, frame by frame"], row["mask"]["MAD"]
                cells.append(f"{video['MAD']} ({video['MAD'] / mask:.3f}), {video['dtSSD']:.3f} "
                             f"[{frames['MAD']}, {frames['dtSSD']:.3f}]")
            lines.append(f"| {name} | {what} | {r['warm_start']} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--work", default="/tmp/maggie_stage_ablation")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "stage_ablation"))
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    for name, stage, _, overrides in ROWS:
        if (args.only and name not in args.only) or (not args.only and name in results):
            continue
        print(f"{name}: training the {stage} stage", flush=True)
        results[name] = run_row(name, stage, overrides, Path(args.work))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    write_table(results, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
