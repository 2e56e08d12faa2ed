"""Where an image network's error lies, against the guidance mask's: near each person's boundary, inside,
on other people, in the background.

    python benchmarks/error_regions.py pretrain/maggie_default_image.safetensors --split comp_hard
    python benchmarks/error_regions.py pretrain/maggie_default_image.safetensors --subset in_dist --degrade
    (--degrade: the images re-encoded as held_out's are: JPEG 40-75 and noise)

Sums of absolute error per region over every person of every image (or video frame, the network run frame
by frame), as fractions of the mask's total error.  "near boundary": within 4 px of the true alpha's 0.5
contour or where the alpha is soft; "on other people": the rest of another person's alpha > 0.5.
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
from maggie.evaluation.benchmarks import frame_predictor  # noqa: E402
from maggie.models import load_model  # noqa: E402

REGIONS = ("near boundary", "inside", "on other people", "background")


def regions(alphas: np.ndarray, i: int) -> list[np.ndarray]:
    a = alphas[i]
    fg = (a > 0.5).astype(np.uint8)
    k = np.ones((9, 9), np.uint8)
    near = ((cv2.dilate(fg, k) - cv2.erode(fg, k)) > 0) | ((a > 0.01) & (a < 0.99))
    others = np.delete(alphas, i, 0).max(0) > 0.5 if len(alphas) > 1 else np.zeros_like(fg, bool)
    on_others = ~near & others
    inside = ~near & ~on_others & (fg > 0)
    return [near, inside, on_others, ~near & ~on_others & ~inside]


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = np.clip(image + rng.normal(0, rng.uniform(0, 0.03) * 255, image.shape), 0, 255).astype(np.uint8)
    q = int(rng.integers(40, 76))
    return cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--split", help="a video split (frames run one by one)")
    ap.add_argument("--subset", default="held_out")
    ap.add_argument("--source", default="sim01_coarse28")
    ap.add_argument("--degrade", action="store_true")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    args = ap.parse_args()
    params = load_params(args.params)
    root, short = params["data"]["root"], params["test"]["short_size"]
    model = load_model(args.weights).eval()
    predict = frame_predictor(model, short, torch.device("cpu"), quantise_masks=False,
                              merge_duplicates=args.split is None and params["test"]["image"]["merge_duplicate_masks"])
    if args.split:
        data = VideoTestSet(root, params["test"]["video"]["dir"], args.split, params["test"]["video"]["mask_dir"])
        items = [(f.image, f.alphas, f.masks) for v in data.videos for f in data.frames(v)]
    else:
        data = ImageTestSet(root, params["test"]["image"]["dir"], args.subset, args.source)
        items = [data.load(n) for n in data.names]
    rng = np.random.default_rng(0)
    net, mask, total_abs = np.zeros(4), np.zeros(4), 0.0
    for image, alphas, masks in items:
        out = predict(degrade(image, rng) if args.degrade else image, masks)
        total_abs += float(np.abs(out - alphas).mean())
        for i in range(len(alphas)):
            for k, region in enumerate(regions(alphas, i)):
                net[k] += np.abs(out[i] - alphas[i])[region].sum()
                mask[k] += np.abs(masks[i].astype(np.float32) - alphas[i])[region].sum()
    where = args.split or f"{args.subset}/{args.source}"
    print(f"{where}{' (degraded)' if args.degrade else ''}: mean absolute error {total_abs / len(items):.3e}")
    for k, name in enumerate(REGIONS):
        print(f"  {name:16s} network {net[k] / mask.sum():.3f}   mask {mask[k] / mask.sum():.3f}")
    print(f"  {'total':16s} network {net.sum() / mask.sum():.3f}   mask 1.000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
