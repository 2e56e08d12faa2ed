"""How well the flow tracker of ``maggie masks`` carries first-frame masks through the video test splits.

    python benchmarks/tracker_iou.py                                   # flow alone
    python benchmarks/tracker_iou.py --weights models/image/best.safetensors   # + re-anchored by the network

For each split of ``test.video`` (the V-HIM60 layout), each video starts from its true first-frame masks
(alpha > 0.5) and is tracked to its end; every frame's masks are scored by IoU against the true masks, per
person, averaged over the people visible in the truth or the prediction.  Beside it: the split's own
simulated-tracker masks (``test.video.mask_dir``, what the video evaluation feeds the network).  With
``--weights`` a third tracker re-anchors on the image network's matte of every frame.  Results go to
``benchmarks/tracker_iou.json`` (mean IoU per split and per frame index) and ``benchmarks/tracker_iou.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params  # noqa: E402
from maggie.data.layout import VideoTestSet  # noqa: E402
from maggie.data.mask_sources import mask_iou  # noqa: E402
from maggie.evaluation.tracked_masks import track_frames  # noqa: E402
from maggie.inference.tracking import TrackerSettings  # noqa: E402


def frame_iou(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean IoU over the people present in either; None when nobody is."""
    ious = [mask_iou(p, t) for p, t in zip(pred, truth, strict=True) if p.any() or t.any()]
    return float(np.mean(ious)) if ious else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--weights", default=None, help="image network that re-anchors the tracker (a third row)")
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "tracker_iou"))
    args = ap.parse_args()
    params = load_params(args.params)
    root, video_cfg = params["data"]["root"], params["test"]["video"]
    settings = TrackerSettings(preset=args.preset)
    predictor = None
    if args.weights:
        from maggie.inference.predictor import Predictor

        predictor = Predictor(args.weights, short_size=params["test"]["short_size"], device="cpu")
    rows = {"flow": "flow from the first frame", video_cfg["mask_dir"]: "the split's simulated tracker"}
    if predictor is not None:
        rows["flow+network"] = f"flow re-anchored by {args.weights}"
    result: dict = {"settings": settings.__dict__, "rows": rows, "splits": {}}
    for split in video_cfg["splits"]:
        data = VideoTestSet(root, video_cfg["dir"], split, video_cfg["mask_dir"])
        per_t: dict[str, dict[int, list[float]]] = {r: {} for r in rows}
        seconds, count = 0.0, 0
        for video in data.videos:
            frames = data.frames(video)
            truth = [(f.alphas > 0.5).astype(np.uint8) for f in frames]
            start = time.perf_counter()
            tracked = {"flow": track_frames(frames, settings)}
            seconds, count = seconds + time.perf_counter() - start, count + len(frames)
            tracked[video_cfg["mask_dir"]] = [f.masks for f in frames]
            if predictor is not None:
                tracked["flow+network"] = track_frames(frames, settings, predictor)
            for row, masks in tracked.items():
                for t, (m, g) in enumerate(zip(masks, truth, strict=True)):
                    iou = frame_iou(m, g)
                    if iou is not None:
                        per_t[row].setdefault(t, []).append(iou)
        result["splits"][split] = {
            row: {"mean_iou": float(np.mean([v for vs in d.values() for v in vs])),
                  "iou_per_frame": [float(np.mean(d[t])) for t in sorted(d)]} for row, d in per_t.items()}
        result["splits"][split]["flow"]["ms_per_frame"] = 1000 * seconds / max(count, 1)
        print(split, json.dumps({r: round(v["mean_iou"], 4) for r, v in result["splits"][split].items()}), flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(result["splits"])
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.2), sharey=True)
    for ax, split in zip(np.atleast_1d(axes), splits, strict=True):
        for row, r in result["splits"][split].items():
            label = f"{row} ({r['mean_iou']:.3f})"
            ax.plot(range(len(r["iou_per_frame"])), r["iou_per_frame"], marker="o", label=label)
        ax.set_title(split)
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("IoU with the true masks")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
