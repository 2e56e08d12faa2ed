"""Latency and peak memory of the network against instance count and resolution.

    python benchmarks/bench_image.py [--device cpu|cuda] [--out benchmarks/bench_<device>.json]

For each resolution, instance count and refinement path (sparse, dense) it times a full
eval-mode forward with the detail region D fixed to a given fraction of the image, split
evenly over the instances (so "10 instances" and "1 instance" refine the same area), and
records peak memory (CUDA: max allocated; CPU: peak RSS of a fresh subprocess per case).
It prints a table and writes JSON plus a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from maggie.files import write_json


def fixed_detail(model, fraction: float):
    """Make the decoder refine a fixed total area: horizontal bands, one per instance."""
    decoder = model.decoder

    def detail_region(alpha8, guide):
        bt, n, h, w = alpha8.shape
        d = torch.zeros_like(alpha8)
        rows = max(1, int(round(h * fraction / n)))
        for i in range(n):
            start = int(i * h / n)
            d[:, i, start:start + rows] = 1.0
        return alpha8, d

    decoder.detail_region = detail_region


def run_case(h: int, w: int, n: int, mode: str, fraction: float, device: str, repeats: int) -> dict:
    from maggie.models import MaGGIe, MaggieConfig

    torch.manual_seed(0)
    dev = torch.device(device)
    model = MaGGIe(MaggieConfig(refine_mode=mode)).to(dev).eval()
    fixed_detail(model, fraction)
    image = torch.randn(1, 1, 3, h, w, device=dev)
    mask = torch.zeros(1, 1, n, h, w, device=dev)
    for i in range(n):
        mask[0, 0, i, :, int(i * w / n): int((i + 1) * w / n)] = 1
    times, peak = time_forward(model, image, mask, dev, repeats)
    return {"height": h, "width": w, "instances": n, "mode": mode, "detail_fraction": fraction, "device": device,
            "latency_ms": 1000 * float(np.median(times)), "peak_mem_mb": peak}


@torch.no_grad()
def time_forward(model, image: torch.Tensor, mask: torch.Tensor, dev: torch.device, repeats: int
                 ) -> tuple[list[float], float]:
    """Seconds per forward after a warm-up, and peak memory in MB (CUDA: max allocated; CPU: peak RSS)."""
    model(image, mask)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(image, mask)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        return times, torch.cuda.max_memory_allocated() / 2**20
    import resource

    return times, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from maggie.files import write_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
    keys = sorted({(r["height"], r["width"], r["mode"], r["detail_fraction"]) for r in results})
    for key in keys:
        rs = sorted((r for r in results if (r["height"], r["width"], r["mode"], r["detail_fraction"]) == key),
                    key=lambda r: r["instances"])
        lab = f"{key[0]}x{key[1]} {key[2]} D={key[3]:.0%}"
        axes[0].plot([r["instances"] for r in rs], [r["latency_ms"] for r in rs], marker="o", label=lab)
        axes[1].plot([r["instances"] for r in rs], [r["peak_mem_mb"] for r in rs], marker="o", label=lab)
    axes[0].set_ylabel("latency (ms)")
    axes[1].set_ylabel("peak memory (MB)")
    for ax in axes:
        ax.set_xlabel("instances")
        ax.legend(fontsize=6)
    write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    ap.add_argument("--sizes", nargs="+", default=["512x512", "576x1024"])
    ap.add_argument("--modes", nargs="+", default=["sparse", "dense"])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case in this process
    args = ap.parse_args(argv)
    if args.case:
        h, w, n, mode, frac = args.case.split(",")
        print(json.dumps(run_case(int(h), int(w), int(n), mode, float(frac), args.device, args.repeats)))
        return 0
    results = []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        for frac in args.fractions:
            for mode in args.modes:
                for n in args.instances:
                    case = f"{h},{w},{n},{mode},{frac}"
                    if args.device == "cpu":  # a fresh process per case, so peak RSS is this case's
                        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--device", "cpu",
                                              "--repeats", str(args.repeats), "--case", case], capture_output=True,
                                             text=True,
                                             check=True, env={**os.environ})
                        r = json.loads(res.stdout.strip().splitlines()[-1])
                    else:
                        r = run_case(h, w, n, mode, frac, args.device, args.repeats)
                    results.append(r)
                    print(f"{h}x{w} D={frac:.0%} {mode:6s} n={n:2d}: {r['latency_ms']:9.1f} ms "
                          f"{r['peak_mem_mb']:8.1f} MB", flush=True)
    out = Path(args.out or f"benchmarks/bench_{args.device}.json")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    write_json(out, {"meta": meta, "results": results})
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
