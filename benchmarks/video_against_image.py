"""Video MAD and dtSSD of an image network frame by frame, and of video weights on sliding clips over the same splits.

    python benchmarks/video_against_image.py pretrain/maggie_default_image.safetensors \\
        --video pretrain/maggie_default_temporal.safetensors models/video/best.safetensors

Each ``--video`` entry is loaded over the image weights (a temporal-modules file completes them; a whole
video network replaces them), so a warm start's temporal part and a trained video stage are measured alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params  # noqa: E402
from maggie.engine.checkpoints import video_network_from  # noqa: E402
from maggie.evaluation.benchmarks import video_against_mask  # noqa: E402
from maggie.models import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", help="image network weights")
    ap.add_argument("--video", nargs="*", default=[], help="temporal-module or video-network weights")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--short-size", type=int, default=None, help="test.short_size of the run (default: params)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    if args.short_size:
        params["test"]["short_size"] = args.short_size
    rows: dict[str, dict] = {"image, frame by frame": video_against_mask(load_model(args.image).eval(), params)}
    for weights in args.video:
        rows[weights] = video_against_mask(video_network_from(args.image, weights), params)
    for split in params["test"]["video"]["splits"]:
        row = {name: {"MAD": round(r[split]["MAD"]), "dtSSD": round(r[split]["dtSSD"], 3)} for name, r in rows.items()}
        row["mask"] = {"MAD": round(rows["image, frame by frame"][split]["mask_MAD"])}
        print(split, json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
