"""Cost of every method against instance count, as in the paper's cost figure.

    python benchmarks/bench_methods.py [--device auto] [--size 512 512] [--instances 1 2 5 10]
                                   [--out benchmarks/methods_cost_<device>.json]

Each case is an eval-mode forward on the same image and the same masks (the first n of ten
person-shaped boxes), timed after a warm-up, with peak memory from a fresh subprocess per case
(CUDA: max allocated; CPU: peak RSS).  Per-instance methods (MGM, MGM+TCVOM, SparseMat) grow
about linearly with n; MaGGIe and MGM* take all instances in one pass.  Weights are random:
cost does not depend on them, except SparseMat's and MaGGIe's refined area, which follows the
mattes; both are reported as they come.  InstMatt's refiner skips instances whose mattes
duplicate another's, which with random weights is all of them, so ``instmatt`` is its cost
without the refiner and ``instmatt_refine_all`` its cost with the refiner on every instance.
FTP-VM and OTVM run once per person on a 3-frame clip, guided by frame 0 (cost per frame).
Likewise random weights leave every pixel of every instance uncertain, so ``maggie`` refines
the whole image once per instance (its worst case); ``maggie_d10`` fixes the refined region to
10% of the image split over the instances (``bench_image.py``'s setting), as boundaries are.
Prints a table, writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from maggie.files import write_figure, write_json

METHODS = {"maggie": "maggie_image", "mgm": "mgm", "mgm_stacked": "mgm_stacked", "mgm_tcvom": "mgm_tcvom",
           "sparsemat": "sparsemat", "instmatt": "instmatt", "instmatt_refine_all": "instmatt",
           "maggie_d10": "maggie_image", "ftpvm": "ftpvm", "otvm": "otvm"}
# Video methods timed per frame of a clip: MGM+TCVOM's window, and FTP-VM / OTVM (whose frame 0 also encodes
# the memory) over 3 frames.
CLIP_FRAMES = {"mgm_tcvom": 3, "ftpvm": 3, "otvm": 3}


def inputs(h: int, w: int, n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, frames, 3, h, w, generator=g)
    masks = torch.zeros(1, frames, n, h, w)
    for i in range(n):  # ten side-by-side "people", each a tall box
        x0 = int(i * w / 10)
        masks[:, :, i, h // 6: h - h // 8, x0 + w // 60: x0 + w // 10 - w // 60] = 1.0
    return image, masks


def one_case(method: str, n: int, h: int, w: int, device: str, repeats: int) -> dict:
    from bench_image import time_forward

    from maggie.models import build_model
    from maggie.runtime import pick_device

    dev = pick_device(device)
    if method == "instmatt_refine_all":
        from maggie.models import refiner

        refiner.duplicates = lambda t: torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
    torch.manual_seed(0)
    model = build_model(METHODS[method]).to(dev).eval()
    if method == "maggie_d10":
        from bench_image import fixed_detail

        fixed_detail(model, 0.1)
    frames = CLIP_FRAMES.get(method, 1)
    image, masks = inputs(h, w, n, frames)
    image, masks = image.to(dev), masks.to(dev)
    times, peak = time_forward(model, image, masks, dev, repeats)
    per_frame = sorted(times)[len(times) // 2] / frames
    return {"method": method, "instances": n, "ms_per_frame": round(1000 * per_frame, 1), "peak_mb": round(peak, 1),
            "frames": frames, "device": str(dev)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [r for r in rows if r["method"] == method]
        for ax, key in zip(axes, ("ms_per_frame", "peak_mb"), strict=True):
            ax.plot([r["instances"] for r in pts], [r[key] for r in pts], marker="o", label=method)
    for ax, title in zip(axes, ("latency per frame (ms)", "peak memory (MB)"), strict=True):
        ax.set_xlabel("instances")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"))
    ap.add_argument("--instances", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--update", action="store_true",
                    help="keep the other methods' rows of an existing --out file (same size) and replace these")
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    h, w = args.size
    if h % 32 or w % 32:
        print(f"bench_methods: error: --size {h} {w}: both must be multiples of 32", file=sys.stderr)
        return 2
    if args.case:  # child process: one case, JSON on stdout
        print(json.dumps(one_case(args.case[0], int(args.case[1]), h, w, args.device, args.repeats)))
        return 0
    out = Path(args.out) if args.out else None
    old_rows: list[dict] = []
    rows: list[dict] = []
    for method in args.methods:
        for n in args.instances:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--case", method, str(n), "--size", str(h), str(w),
                   "--device", args.device, "--repeats", str(args.repeats)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"bench_methods: error: {method} with {n} instances failed: "
                      f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}",
                      file=sys.stderr)
                return 1
            row = {**json.loads(res.stdout.strip().splitlines()[-1]), "repeats": args.repeats}
            if not rows:  # the first case: where to write, and what --update keeps
                out = out or Path(f"benchmarks/methods_cost_{row['device'].split(':')[0]}.json")
                if args.update and out.exists():
                    old = json.loads(out.read_text())
                    if old.get("size") != [h, w]:
                        print(f"bench_methods: error: {out} holds size {old.get('size')}, not {[h, w]}",
                              file=sys.stderr)
                        return 2
                    old_rows = [{"repeats": old.get("repeats"), **r} for r in old["rows"]]
            rows.append(row)
            print(f"{method:19s} n={n:2d}  {row['ms_per_frame']:9.1f} ms/frame  {row['peak_mb']:8.1f} MB  "
                  f"({row['device']})", flush=True)
            # Written after every case: an interrupted run keeps what it measured.  --update replaces only the
            # (method, instances) rows measured now.
            done = {(r["method"], r["instances"]) for r in rows}
            merged = [r for r in old_rows if (r["method"], r["instances"]) not in done] + rows
            write_json(out, {"size": [h, w], "rows": merged})
    if rows:
        plot(merged, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
