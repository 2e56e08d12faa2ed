"""Side by side with the authors' code: the same weights, the same inputs, the eval forward of the image
network on a CPU, ours against ``hmchuong/MaGGIe`` (spconv).  A benchmark, not a test.

    python benchmarks/bench_vs_reference.py --setup-venv ../refvenv            # once: torch 2.13.0 + spconv 2.3.8
    python benchmarks/bench_vs_reference.py --reference /path/to/MaGGIe --reference-python ../refvenv/bin/python

``--reference`` is a checkout of the authors' repository (imported unedited by ``reference_maggie.py``, in
its own virtual environment).  First both networks run the shared parity case (``../shared/parity``,
the network's own uncertain region, one thread: spconv's CPU convolutions are not deterministic on two)
and their mattes are compared with each other and with the fixture.  Then every case: an image, the first
``n`` of ten person-shaped boxes as masks, and a band across each person's mask edge as the uncertain
region (both networks refine exactly those pixels; the bands' total area is the case's fraction of the
image).  Each side runs in a fresh process per case: median of ``--repeats`` timed forwards after
``--warmup``, peak RSS (imports, model and weights included), outputs compared.  Ours runs each
refinement backend of ``--modes``.  Writes ``benchmarks/bench_vs_reference.json`` and ``.png`` and prints
the table of the README.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
from maggie.runtime import HEAP_THRESHOLD  # noqa: E402

PARITY = REPO.parent / "shared" / "parity"
# (height, width, people, uncertain fraction of the image, one mask for all): the cases of issue 19, then
# ten people against one person whose mask is the same ten boxes, at 576 x 1024: the same uncertain pixels,
# so the difference is what each further person costs.
CASES = [(512, 512, 1, 0.002, False), (512, 512, 5, 0.57, False), (512, 512, 10, 0.04, False),
         (576, 1024, 5, 0.55, False), (576, 1024, 10, 0.04, False), (576, 1024, 10, 0.04, True)]
VENV_PACKAGES = ["spconv==2.3.8", "yacs", "opencv-python-headless", "kornia==0.6.12", "fvcore", "huggingface_hub",
                 "safetensors", "numpy"]


def person_boxes(h: int, w: int, n: int) -> np.ndarray:
    """The first ``n`` of ten tall side-by-side boxes (``bench_methods.inputs``), ``[n, h, w]``."""
    masks = np.zeros((n, h, w), np.float32)
    for i in range(n):
        x0 = int(i * w / 10)
        masks[i, h // 6: h - h // 8, x0 + w // 60: x0 + w // 10 - w // 60] = 1.0
    return masks


def edge_bands(masks: np.ndarray, fraction: float) -> tuple[np.ndarray, float]:
    """Per person a band across its mask edge (outside ceil(k/2) px, inside k // 2), the width k whose bands
    add up closest to ``fraction`` of the image; returns the bands and their fraction."""
    outside = np.stack([cv2.distanceTransform((1 - m).astype(np.uint8), cv2.DIST_L2, 5) for m in masks])
    inside = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5) for m in masks])
    best = None
    for k in range(1, 400):
        band = ((outside > 0) & (outside <= (k + 1) // 2)) | ((inside > 0) & (inside <= k // 2))
        f = band.sum() / masks[0].size
        if best is None or abs(f - fraction) < abs(best[1] - fraction):
            best = (band.astype(np.float32), float(f))
        if f > fraction:
            break
    return best


def write_case(path: Path, h: int, w: int, n: int, fraction: float, union: bool) -> float:
    image = np.random.default_rng(0).standard_normal((1, 1, 3, h, w)).astype(np.float32)
    masks = person_boxes(h, w, n)
    bands, got = edge_bands(masks, fraction)
    if union:  # one person: the boxes under one mask, the same uncertain pixels
        masks, bands = masks.max(0, keepdims=True), bands.max(0, keepdims=True)
    np.savez(path, image=image, mask=masks[None, None], detail=bands[None, None])
    return got


def run_ours(inputs: Path, weights: Path, mode: str, threads: int, warmup: int, repeats: int, fixed: bool,
             out: Path, bf16: bool = False) -> dict:
    """One case in this process (``--child``); ``bf16``: under CPU autocast, as ``maggie predict --precision bf16``."""
    import torch

    from maggie.models import load_model
    from maggie.runtime import keep_freed_memory

    keep_freed_memory()  # as `maggie predict` and evaluation run (MAGGIE_SYSTEM_MALLOC=1: glibc's defaults)
    torch.set_num_threads(threads)
    model = load_model(str(weights), refine_mode=mode)
    data = np.load(inputs)
    image, mask = torch.from_numpy(data["image"]), torch.from_numpy(data["mask"])
    if fixed:
        detail = torch.from_numpy(data["detail"]).flatten(0, 1)
        model.decoder.detail_region = lambda alpha8, guide: (alpha8, detail)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            result = model(image, mask)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    np.savez_compressed(out, alpha=result["alpha"].float().numpy(), detail=result["detail_mask"].float().numpy())
    return {"median_ms": round(1000 * float(np.median(times)), 1), "times_ms": [round(1000 * t, 1) for t in times],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "threads": torch.get_num_threads()}


def child(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    if res.returncode != 0:
        raise SystemExit(f"bench_vs_reference: {' '.join(cmd[:3])} ... failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def diff(a: Path, b: Path) -> dict:
    x, y = np.load(a)["alpha"].astype(np.float64), np.load(b)["alpha"].astype(np.float64)
    d = np.abs(x - y)
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max()), "share_over_1e-2": float((d > 1e-2).mean())}


def setup_venv(folder: Path) -> int:
    """A virtual environment for the authors' code: the CPU torch first (pinned), then spconv's CPU build."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + VENV_PACKAGES, check=True)
    print(f"reference environment ready: {folder / 'bin' / 'python'}")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from maggie.files import write_figure

    labels = [r["case"].replace(", ", ",\n", 1) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    keys = [k for k in ("reference_ms", "reference_heap_ms") if k in rows[0]]
    keys += [k for k in rows[0] if k.startswith("ours_") and k.endswith("_ms")]
    x = np.arange(len(rows))
    for i, k in enumerate(keys):
        ax.bar(x + (i - len(keys) / 2 + 0.5) * 0.8 / len(keys), [r[k] for r in rows], 0.8 / len(keys),
               label=k.removesuffix("_ms").replace("_", " "))
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_yscale("log")  # the dense path is up to 20x the others
    ax.set_ylabel("eval forward (ms, log scale)")
    ax.set_title(f"CPU, {rows[0].get('threads', 2)} threads: the authors' network (spconv) and ours, same weights",
                 fontsize=9)
    ax.legend(fontsize=7)
    write_figure(path, fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="a checkout of hmchuong/MaGGIe")
    ap.add_argument("--reference-python", default=None, help="python of the reference's environment")
    ap.add_argument("--setup-venv", type=Path, default=None, help="make the reference's environment here and stop")
    ap.add_argument("--modes", nargs="+", default=["sparse", "dense"], choices=["sparse", "rulebook", "dense"])
    ap.add_argument("--bf16", action="store_true",
                    help="also time ours sparse in bfloat16 (CPU autocast; its mattes differ from fp32: see the JSON)")
    ap.add_argument("--reference-heap", action="store_true",
                    help="also time the official under the allocator settings ours runs with (glibc's "
                         "MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, maggie.runtime.keep_freed_memory)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="repeat each case, the official and ours alternating; "
                    "times and ratios are medians over the rounds (this machine's speed drifts by 15-25%%)")
    ap.add_argument("--only", nargs="*", type=int, default=None, help="case indices to run")
    ap.add_argument("--out", type=Path, default=HERE / "bench_vs_reference.json")
    ap.add_argument("--weights", type=Path, default=REPO / "pretrain" / "maggie_default_image.safetensors",
                    help="for the timed cases (official layout): trained weights give mattes as in use")
    ap.add_argument("--child", nargs=7, metavar=("INPUTS", "WEIGHTS", "MODE", "THREADS", "WARMUP", "REPEATS", "OUT"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--fixed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        inputs, weights, mode, threads, warmup, repeats, out = args.child
        print(json.dumps(run_ours(Path(inputs), Path(weights), mode, int(threads), int(warmup), int(repeats),
                                  args.fixed, Path(out), bf16=args.bf16)))
        return 0
    # (column, refinement mode, bf16): fp32 per mode, then the sparse path in bfloat16 if asked
    variants = [(m, m, False) for m in args.modes] + ([("sparse_bf16", "sparse", True)] if args.bf16 else [])
    if args.setup_venv:
        return setup_venv(args.setup_venv)
    if args.reference is None or not (args.reference / "maggie" / "network").is_dir():
        print("bench_vs_reference: error: --reference must be a checkout of hmchuong/MaGGIe", file=sys.stderr)
        return 2
    ref_python = args.reference_python or sys.executable
    parity_weights = PARITY / "maggie_image_weights.safetensors"
    me = [sys.executable, str(Path(__file__).resolve())]
    shown = args.weights.relative_to(REPO) if args.weights.is_relative_to(REPO) else args.weights
    result: dict = {"weights": str(shown), "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                    "rounds": args.rounds, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(os.environ.get("BENCH_KEEP", tmp))
        # 1. Same mattes on the authors' parity case (one thread), the network choosing its own region.
        fixture = PARITY / "image_3inst.npz"
        ref_out = tmp / "ref_fixture.npz"
        child([ref_python, str(HERE / "reference_maggie.py"), "--reference", str(args.reference.resolve()),
               "--weights", str(parity_weights), "--inputs", str(fixture), "--out", str(ref_out), "--threads", "1"])
        parity = {}
        for mode in args.modes:
            ours_out = tmp / f"ours_fixture_{mode}.npz"
            child(me + ["--child", str(fixture), str(parity_weights), mode, "1", "0", "1", str(ours_out)])
            truth = np.load(fixture)["out_refined_masks"]
            np.savez(tmp / "truth.npz", alpha=truth)
            parity[mode] = {"vs_reference": diff(ours_out, ref_out), "vs_fixture": diff(ours_out, tmp / "truth.npz")}
        parity["reference_vs_fixture"] = diff(ref_out, tmp / "truth.npz")
        result["parity"] = parity
        print("parity (mean abs diff of the final mattes):", json.dumps(parity))
        # 2. The timed cases.
        for i, (h, w, n, fraction, union) in enumerate(CASES):
            if args.only is not None and i not in args.only:
                continue
            inputs = tmp / f"case{i}.npz"
            got = write_case(inputs, h, w, n, fraction, union)
            who = f"1 person of {n} boxes" if union else f"{n} {'person' if n == 1 else 'people'}"
            row = {"case": f"{h}x{w}, {who} ({100 * got:.1f}%)", "height": h, "width": w,
                   "people": 1 if union else n, "uncertain_fraction": round(got, 4)}
            ref_out = tmp / f"ref{i}.npz"
            ref_cmd = [ref_python, str(HERE / "reference_maggie.py"), "--reference", str(args.reference.resolve()),
                       "--weights", str(args.weights), "--inputs", str(inputs), "--out", str(ref_out), "--fixed-detail",
                       "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
            # Rounds alternate the official and ours, so a drift of this shared machine's speed lands on both;
            # each ratio is the median of the rounds' own ratios.
            runs: dict[str, list[dict]] = {}
            heap_env = {"MALLOC_MMAP_THRESHOLD_": str(HEAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(HEAP_THRESHOLD)}
            for _ in range(args.rounds):
                runs.setdefault("reference", []).append(child(ref_cmd))
                if args.reference_heap:
                    runs.setdefault("reference_heap", []).append(child(ref_cmd, heap_env))
                for col, mode, bf16 in variants:
                    runs.setdefault(col, []).append(child(
                        me + ["--child", str(inputs), str(args.weights), mode, str(args.threads), str(args.warmup),
                              str(args.repeats), str(tmp / f"ours{i}_{col}.npz"), "--fixed"] + (["--bf16"] if bf16
                                                                                                 else [])))

            ms, rss, ratio = round_medians(runs)
            row.update(reference_ms=ms("reference"), reference_rss_mb=rss("reference"))
            if args.rounds > 1:
                row["rounds_ms"] = {k: [r["median_ms"] for r in v] for k, v in runs.items()}
            if args.reference_heap:
                row.update(reference_heap_ms=ms("reference_heap"), reference_heap_rss_mb=rss("reference_heap"))
            for col, _, bf16 in variants:
                d = diff(tmp / f"ours{i}_{col}.npz", ref_out)
                row.update({f"ours_{col}_ms": ms(col), f"ours_{col}_rss_mb": rss(col),
                            f"ours_{col}_vs_reference": ratio(col, "reference"),
                            f"ours_{col}_mean_abs_diff": d["mean_abs"]})
                if args.reference_heap:
                    row[f"ours_{col}_vs_reference_heap"] = ratio(col, "reference_heap")
                if bf16:
                    row.update({f"ours_{col}_max_abs_diff": d["max_abs"],
                                f"ours_{col}_share_over_1e-2": d["share_over_1e-2"]})
            result["cases"].append(row)
            print(json.dumps(row), flush=True)
    cols = [c for c, _, _ in variants]
    result["people_vs_one"] = people_vs_one(result["cases"], cols)
    from maggie.files import write_json

    write_json(args.out, result)
    if result["cases"]:
        plot(result["cases"], args.out.with_suffix(".png"))
    ratios = [c for c in ("sparse", "sparse_bf16") if c in cols]
    heap = args.reference_heap
    print("\n| case | official (spconv) | " + ("official, heap | " if heap else "")
          + " | ".join(f"ours {c}" for c in cols) + " | " + " | ".join(f"ours {c} / official" for c in ratios)
          + (" | ours sparse / official, heap" if heap else "") + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cols + ratios + ([0, 0] if heap else [])) + " |")
    for r in result["cases"]:
        cells = [f"{r['reference_heap_ms']:.0f} ms, {r['reference_heap_rss_mb']:.0f} MB"] if heap else []
        cells += [f"{r[f'ours_{c}_ms']:.0f} ms, {r[f'ours_{c}_rss_mb']:.0f} MB" for c in cols]
        cells += [f"{r[f'ours_{c}_vs_reference']:.2f}x" for c in ratios]
        cells += [f"{r['ours_sparse_vs_reference_heap']:.2f}x"] if heap and "sparse" in cols else []
        print(f"| {r['case']} | {r['reference_ms']:.0f} ms, {r['reference_rss_mb']:.0f} MB | " + " | ".join(cells)
              + " |")
    for key, ratio in result["people_vs_one"].items():
        print(f"{key}: {ratio:.2f}x")
    return 0


def round_medians(runs: dict[str, list[dict]]):
    """Per method over the rounds of one case: the median time, the peak RSS, and the median of each round's ratio
    to another method."""
    def ms(name: str) -> float:
        return float(np.median([r["median_ms"] for r in runs[name]]))

    def rss(name: str) -> float:
        return max(r["peak_rss_mb"] for r in runs[name])

    def ratio(name: str, base: str) -> float:
        return float(np.median([a["median_ms"] / b["median_ms"] for a, b in zip(runs[name], runs[base], strict=True)]))

    return ms, rss, ratio


def people_vs_one(rows: list[dict], modes: list[str]) -> dict[str, float]:
    """Time of n people over one person on the same uncertain pixels (the last two cases), per method."""
    def key(r: dict) -> tuple:
        return r["height"], r["width"], r["uncertain_fraction"]

    pairs = [(a, b) for a in rows for b in rows if a["people"] > 1 and b["people"] == 1 and key(a) == key(b)]
    out = {}
    for many, one in pairs:
        tag = f"{many['height']}x{many['width']} {many['people']} people vs 1"
        out[f"{tag}, official"] = many["reference_ms"] / one["reference_ms"]
        if "reference_heap_ms" in many:
            out[f"{tag}, official (heap)"] = many["reference_heap_ms"] / one["reference_heap_ms"]
        for m in modes:
            out[f"{tag}, ours {m}"] = many[f"ours_{m}_ms"] / one[f"ours_{m}_ms"]
    return out


if __name__ == "__main__":
    sys.exit(main())
