"""The authors' MaGGIe image network (``hmchuong/MaGGIe``, imported unedited from a checkout) on a CPU, for
``bench_vs_reference.py``.  Runs in its own virtual environment (torch 2.13.0, spconv 2.3.8 and the few
packages its model code imports; ``bench_vs_reference.py --setup-venv`` makes it), never in the project's.

    python benchmarks/reference_maggie.py --reference /path/to/MaGGIe --weights W.safetensors \\
        --inputs case.npz --out out.npz [--fixed-detail] [--threads 2] [--warmup 2] [--repeats 5]

Runtime patches only, nothing in the checkout is changed:

* spconv's CPU path refuses a bias fused into an eval-mode sparse convolution ("cpu don't support act and
  bias"): the convolution runs without it and the bias is added to its output, as spconv does in training.
* ``.cuda()`` calls go to the CPU (the image network's eval forward makes none; kept for safety).
* ``--fixed-detail``: the decoder's uncertain region (its ``compute_unknown(alpha_os8, 30)``) is the input
  file's ``detail``, as the project's side gets it, so both refine the same pixels.

The authors' spectral norm runs a power iteration and writes ``weight_u``/``weight_v`` back on every call,
eval included; the loaded vectors are restored before each call (inside the timed region), so every call
computes what the first one after loading does.  Prints one JSON line: median milliseconds, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

IMAGE_CONFIG = "configs/maggie_image.yaml"
_FIXED: dict[str, torch.Tensor | None] = {"detail": None}


def patch_runtime() -> None:
    from spconv.pytorch.conv import SparseConvolution

    conv = SparseConvolution._conv_forward

    def conv_forward(self, training, features, weight, bias, *args, **kwargs):
        if bias is not None and not training and not features.features.is_cuda:
            out = conv(self, training, features, weight, None, *args, **kwargs)
            return out.replace_feature(out.features + bias)
        return conv(self, training, features, weight, bias, *args, **kwargs)

    SparseConvolution._conv_forward = conv_forward
    torch.Tensor.cuda = lambda self, *a, **k: self.to("cpu")
    torch.nn.Module.cuda = lambda self, *a, **k: self.to("cpu")

    decoder = sys.modules["maggie.network.decoder.resnet_inst_matt_spconv"]
    unknown = decoder.compute_unknown

    def compute_unknown(masks, k_size=30, is_train=False, *args, **kwargs):
        if _FIXED["detail"] is not None and k_size == 30 and not is_train:
            return _FIXED["detail"]
        return unknown(masks, k_size, is_train, *args, **kwargs)

    decoder.compute_unknown = compute_unknown


def build(reference: Path, weights: Path) -> torch.nn.Module:
    sys.path.insert(0, str(reference))
    import maggie.network as network  # the authors' package, from the checkout

    if not Path(network.__file__).resolve().is_relative_to(reference):
        raise SystemExit(f"reference_maggie: imported maggie from {network.__file__}, not from {reference}")
    from maggie.utils.config import CONFIG
    from safetensors.torch import load_file

    patch_runtime()
    cfg = CONFIG.clone()
    cfg.merge_from_file(str(reference / IMAGE_CONFIG))
    cfg.model.weights = ""
    cwd = os.getcwd()
    os.chdir(reference)  # their encoder looks for pretrain/ relative to the repository
    try:
        model = getattr(network, cfg.model.arch)(cfg.model)
    finally:
        os.chdir(cwd)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()})
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path)
    ap.add_argument("--weights", required=True, type=Path)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--fixed-detail", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args.reference.resolve(), args.weights)
    vectors = [(p, p.detach().clone()) for n, p in model.named_parameters() if n.endswith(("weight_u", "weight_v"))]
    data = np.load(args.inputs)
    batch = {"image": torch.from_numpy(data["image"]).float(), "mask": torch.from_numpy(data["mask"]).float()}
    if args.fixed_detail:
        _FIXED["detail"] = (torch.from_numpy(data["detail"]).flatten(0, 1) > 0).to(torch.uint8)
    times, out = [], None
    with torch.no_grad():
        for i in range(args.warmup + args.repeats):
            t0 = time.perf_counter()
            for p, saved in vectors:
                p.copy_(saved)
            out = model(batch)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    if args.out:
        np.savez_compressed(args.out, alpha=out["refined_masks"].float().numpy(),
                            detail=out["detail_mask"].float().numpy())
    print(json.dumps({"median_ms": round(1000 * float(np.median(times)), 1),
                      "times_ms": [round(1000 * t, 1) for t in times],
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
