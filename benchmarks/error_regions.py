"""Where a network's error lies, against the guidance mask's: near each person's boundary (where people
meet, or against the background), inside, on other people, in the background.

    python benchmarks/error_regions.py pretrain/maggie_default_image.safetensors --split comp_hard
    python benchmarks/error_regions.py models/image/best.safetensors --split comp_hard \\
        --video models/video/best.safetensors
    python benchmarks/error_regions.py pretrain/maggie_default_image.safetensors --subset in_dist --degrade
    (--degrade: the images re-encoded as held_out's are: JPEG 40-75 and noise; --true-masks: the network
    guided by the true alphas > 0.5 instead of the test masks, and those masks are what "mask" measures)

Sums of absolute error per region over every person of every image or video frame, as fractions of the mask's
total error, and the part of it where the network's matte is too high / too low.  An image network runs frame
by frame; ``--video`` runs the video network (those weights over the image weights) on sliding clips, as the
evaluation does.  Both apply the evaluation's ``test.sum_to_one``.  "near boundary": within 4 px of the true
alpha's 0.5 contour or where the alpha is soft, split into "where people meet" (within 4 px of another
person's alpha > 0.5) and "against background"; "on other people": the rest of another person's alpha > 0.5.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params  # noqa: E402
from maggie.data.layout import ImageTestSet, VideoTestSet  # noqa: E402
from maggie.engine.checkpoints import video_network_from  # noqa: E402
from maggie.evaluation.benchmarks import frame_predictor  # noqa: E402
from maggie.inference.pipeline import predict_video  # noqa: E402
from maggie.models import load_model  # noqa: E402

REGIONS = ("near boundary, where people meet", "near boundary, against background", "inside", "on other people",
           "background")


def regions(alphas: np.ndarray, i: int) -> list[np.ndarray]:
    a = alphas[i]
    fg = (a > 0.5).astype(np.uint8)
    k = np.ones((9, 9), np.uint8)
    near = ((cv2.dilate(fg, k) - cv2.erode(fg, k)) > 0) | ((a > 0.01) & (a < 0.99))
    others = np.delete(alphas, i, 0).max(0) > 0.5 if len(alphas) > 1 else np.zeros_like(fg, bool)
    meet = near & (cv2.dilate(others.astype(np.uint8), k) > 0)
    on_others = ~near & others
    inside = ~near & ~on_others & (fg > 0)
    return [meet, near & ~meet, inside, on_others, ~near & ~on_others & ~inside]


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = np.clip(image + rng.normal(0, rng.uniform(0, 0.03) * 255, image.shape), 0, 255).astype(np.uint8)
    q = int(rng.integers(40, 76))
    return cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--split", help="a video split (frames run one by one, or clips with --video)")
    ap.add_argument("--video", help="video-network weights, loaded over the image weights (with --split)")
    ap.add_argument("--subset", default="held_out")
    ap.add_argument("--source", default="sim01_coarse28")
    ap.add_argument("--degrade", action="store_true")
    ap.add_argument("--true-masks", action="store_true", help="guidance: the true alphas > 0.5 (its best case)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    args = ap.parse_args()
    params = load_params(args.params)
    root, short, rule = params["data"]["root"], params["test"]["short_size"], params["test"].get("sum_to_one", False)
    cpu = torch.device("cpu")

    def guide(alphas: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return (alphas > 0.5).astype(masks.dtype) if args.true_masks else masks
    if args.video and not args.split:
        ap.error("--video needs --split")
    items = []
    if args.split:
        data = VideoTestSet(root, params["test"]["video"]["dir"], args.split, params["test"]["video"]["mask_dir"])
        if args.video:
            model = video_network_from(args.weights, args.video)
            for v in data.videos:
                frames = data.frames(v)
                masks = [guide(f.alphas, f.masks) for f in frames]
                mattes = predict_video(model, ((f.image, m) for f, m in zip(frames, masks, strict=True)), short, cpu,
                                       params["test"]["video"].get("clip_length", 3), sum_to_one=rule)
                items += [(f.alphas, m, out) for f, m, out in zip(frames, masks, mattes, strict=True)]
        else:
            predict = frame_predictor(load_model(args.weights).eval(), short, cpu, quantise_masks=False,
                                      sum_to_one=rule)
            for f in (f for v in data.videos for f in data.frames(v)):
                masks = guide(f.alphas, f.masks)
                items.append((f.alphas, masks, predict(f.image, masks)))
    else:
        predict = frame_predictor(load_model(args.weights).eval(), short, cpu, quantise_masks=False,
                                  merge_duplicates=params["test"]["image"]["merge_duplicate_masks"], sum_to_one=rule)
        data = ImageTestSet(root, params["test"]["image"]["dir"], args.subset, args.source)
        rng = np.random.default_rng(0)
        for name in data.names:
            image, alphas, masks = data.load(name)
            masks = guide(alphas, masks)
            items.append((alphas, masks, predict(degrade(image, rng) if args.degrade else image, masks)))
    n = len(REGIONS)
    high, low, mask, total_abs = np.zeros(n), np.zeros(n), np.zeros(n), 0.0
    for alphas, masks, out in items:
        total_abs += float(np.abs(out - alphas).mean())
        for i in range(len(alphas)):
            err = out[i] - alphas[i]
            for k, region in enumerate(regions(alphas, i)):
                high[k] += np.clip(err, 0, None)[region].sum()
                low[k] += np.clip(-err, 0, None)[region].sum()
                mask[k] += np.abs(masks[i].astype(np.float32) - alphas[i])[region].sum()
    where = (args.split or f"{args.subset}/{args.source}") + (" (video network)" if args.video else "") + (
        ", guided by the true alphas > 0.5" if args.true_masks else "")
    print(f"{where}{' (degraded)' if args.degrade else ''}: mean absolute error {total_abs / len(items):.3e} "
          f"(fractions of the mask's total error)")
    total = mask.sum()
    for k, name in enumerate(REGIONS):
        print(f"  {name:34s} network {(high[k] + low[k]) / total:.3f} (too high {high[k] / total:.3f}, "
              f"too low {low[k] / total:.3f})   mask {mask[k] / total:.3f}")
    print(f"  {'total':34s} network {(high.sum() + low.sum()) / total:.3f}   mask 1.000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
