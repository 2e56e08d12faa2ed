"""Where the eval forward's time goes, per module, on one case of ``bench_vs_reference.py``.

    python benchmarks/profile_modules.py --case 4 --threads 1 [--ops]

Times the encoder, ASPP, decoder layers, instance matte decoder and refinement with forward hooks
(mean of 2 forwards after a warm-up); the rest of the decoder is the per-person full-resolution work
(upsampling, tanh, dilations, fusion).  ``--ops`` adds torch.profiler's table of the costliest ops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_reference import CASES, REPO, write_case  # noqa: E402

from maggie.models import load_model  # noqa: E402
from maggie.runtime import keep_freed_memory  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=int, default=4, help=f"index into bench_vs_reference.CASES (0..{len(CASES) - 1})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", default="sparse", choices=["sparse", "tiles", "rulebook", "dense"])
    ap.add_argument("--weights", type=Path, default=REPO / "pretrain" / "maggie_default_image.safetensors")
    ap.add_argument("--ops", action="store_true", help="also print torch.profiler's op table")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as `maggie predict` and evaluation run (MAGGIE_SYSTEM_MALLOC=1: glibc's defaults)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case.npz"
        got = write_case(case, *CASES[args.case])
        data = np.load(case)
    model = load_model(str(args.weights), refine_mode=args.mode)
    image, mask = torch.from_numpy(data["image"]), torch.from_numpy(data["mask"])
    detail = torch.from_numpy(data["detail"]).flatten(0, 1)
    model.decoder.detail_region = lambda alpha8, guide: (alpha8, detail)
    dec = model.decoder
    parts = {"encoder": model.encoder, "aspp": model.aspp, "decoder": dec, "decoder layers to OS8": None,
             "instance matte decoder": dec.refine_OS8}
    times: dict[str, float] = {k: 0.0 for k in parts}
    times["refinement"] = 0.0

    def hooks(name: str, module: torch.nn.Module) -> None:
        start: list[float] = []
        module.register_forward_pre_hook(lambda m, i: start.append(time.perf_counter()))
        module.register_forward_hook(lambda m, i, o: times.__setitem__(name, times[name] + time.perf_counter()
                                                                       - start.pop()))

    for name, module in parts.items():
        if module is not None:
            hooks(name, module)
    for layer in (dec.layer1, dec.layer2):
        hooks("decoder layers to OS8", layer)
    refine = dec.refine_logits

    def timed_refine(*a, **k):
        t0 = time.perf_counter()
        out = refine(*a, **k)
        times["refinement"] += time.perf_counter() - t0
        return out

    dec.refine_logits = timed_refine
    with torch.inference_mode():
        model(image, mask)
        for k in times:
            times[k] = 0.0
        t0 = time.perf_counter()
        for _ in range(2):
            model(image, mask)
        total = (time.perf_counter() - t0) / 2
    h, w, n, _, union = CASES[args.case]
    print(f"{h}x{w}, {'1 person of ' if union else ''}{n} {'boxes' if union else 'people'} ({100 * got:.1f}%), "
          f"{args.threads} thread(s), refine_mode {args.mode}: {1000 * total:.0f} ms")
    rest = times["decoder"] - sum(times[k] for k in ("decoder layers to OS8", "instance matte decoder", "refinement"))
    for k, v in times.items():
        if k != "decoder":
            print(f"  {k:28s} {500 * v:8.0f} ms")
    print(f"  {'per-person full-res maps':28s} {500 * rest:8.0f} ms")
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(image, mask)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
