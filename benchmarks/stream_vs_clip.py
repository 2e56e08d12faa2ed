"""Streamed video inference (the authors' test loop) against one eval forward over each whole test clip.

    python benchmarks/stream_vs_clip.py --out benchmarks/stream_vs_clip.json

``maggie predict`` and the video evaluation slide 3-frame clips over a video, each frame's final
matte being the fused middle of the clip centred on it (the reference's test loop, the protocol of
the paper's video tables).  ``MaGGIe(...)(clip)`` on a longer clip is the authors' eval forward on
that clip: the Conv-GRU runs over all of it and only frames 1 and 2 are fused.  This measures how far
apart the two are on the default's test splits, with the shipped warm start.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from maggie.data.layout import VideoTestSet
from maggie.engine.checkpoints import video_network_from
from maggie.inference.pipeline import plan_geometry, predict_video, prepare, restore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="pretrain/maggie_default_image.safetensors")
    ap.add_argument("--temporal", default="pretrain/maggie_default_temporal.safetensors")
    ap.add_argument("--data", default="data", help="data root holding V-HIM60 (made by dvc repro)")
    ap.add_argument("--short-size", type=int, default=192)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/stream_vs_clip.json"))
    args = ap.parse_args()
    model = video_network_from(args.image, args.temporal)
    cpu = torch.device("cpu")
    result = {}
    for split in ("comp_easy", "comp_medium", "comp_hard"):
        data = VideoTestSet(args.data, "V-HIM60", split, "xmem")
        rows = []
        for video in data.videos:
            frames = data.frames(video)
            gt = np.stack([f.alphas for f in frames])
            streamed = np.stack(list(predict_video(model, ((f.image, f.masks) for f in frames), args.short_size, cpu)))
            geom = plan_geometry(*frames[0].image.shape[:2], args.short_size, 32)
            img, m = prepare(np.stack([f.image for f in frames]), np.stack([f.masks for f in frames]), geom)
            with torch.no_grad():
                whole = model(img, m)["alpha"][0]
            whole = np.stack([restore(whole[i], geom) for i in range(whole.shape[0])])
            rows.append((np.abs(streamed - gt).mean(), np.abs(whole - gt).mean(), np.abs(streamed - whole).mean(),
                         len(frames)))
        r = np.array(rows)
        result[split] = {"videos": len(rows), "frames": int(r[:, 3].sum()),
                         "mean_abs_error_streamed": float(r[:, 0].mean()),
                         "mean_abs_error_whole_clip": float(r[:, 1].mean()),
                         "mean_abs_difference": float(r[:, 2].mean())}
        print(split, result[split], flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
