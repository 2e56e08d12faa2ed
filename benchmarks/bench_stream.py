"""Peak memory of streamed video prediction against video length (it should not grow).

    python benchmarks/bench_stream.py [--frames 10 300] [--size 192 256] [--out benchmarks/stream_memory.json]

Each length runs in a fresh subprocess (video network, random weights, synthetic frames and
masks generated on the fly, nothing held by the caller) and reports its peak resident memory
(Linux VmHWM) and frames per second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from maggie.files import write_json


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(frames: int, h: int, w: int, instances: int) -> dict:
    import torch

    from maggie.inference.predictor import Predictor
    from maggie.models import MaGGIe, MaggieConfig

    torch.manual_seed(0)
    weights = MaGGIe(MaggieConfig(arch="maggie_video")).state_dict()
    predictor = Predictor(weights, short_size=min(h, w), device="cpu")

    def stream():
        rng = np.random.default_rng(0)
        for t in range(frames):
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            masks = np.zeros((instances, h, w), np.uint8)
            for i in range(instances):
                x0 = (i * w) // instances + (t % 8)
                masks[i, h // 6: h - h // 8, x0: x0 + w // instances - 8] = 1
            yield img, masks

    t0 = time.time()
    n = sum(1 for _ in predictor.video(stream()))
    seconds = time.time() - t0
    return {"frames": n, "seconds": round(seconds, 2), "fps": round(n / seconds, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "size": [h, w], "instances": instances}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[10, 300])
    ap.add_argument("--size", type=int, nargs=2, default=[192, 256])
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/stream_memory.json")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    h, w = args.size
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, h, w, args.instances)))
        return 0
    rows = []
    for n in args.frames:
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(n), "--size", str(h),
                              str(w), "--instances", str(args.instances)], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['frames']:>5} frames  {row['fps']:6.2f} frames/s  peak RSS {row['peak_rss_mb']:8.1f} MB")
    write_json(args.out, {"device": "cpu", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
