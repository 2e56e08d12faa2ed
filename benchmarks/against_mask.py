"""One network's headline image figures: mean MAD over the ten mask sources of each subset, next to the mask's.

    python benchmarks/against_mask.py models/pretrain/image/ckpt/last.safetensors --subsets held_out

The same evaluation as the report's opening table and ``pretrain/warm_start.json`` (the test sets of
params.yaml, identical masks merged as the default does), for weights that are neither: a pretrain phase,
an ablation's network, a checkpoint of your own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params  # noqa: E402
from maggie.evaluation.benchmarks import against_mask  # noqa: E402
from maggie.models import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="a safetensors file (or hub id) of an image network")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--subsets", nargs="*", default=None, help="default: test.image.subsets")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--short-size", type=int, default=None, help="test.short_size of the run (default: params)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: the network under CPU/GPU autocast (what `maggie predict --precision bf16` runs)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    if args.short_size:
        params["test"]["short_size"] = args.short_size
    if args.subsets:
        params["test"]["image"]["subsets"] = args.subsets
    import torch

    model = load_model(args.weights)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        result = against_mask(model, params)
    print(json.dumps({s: {k: round(r[k], 3) for k in ("MAD", "mask_MAD", "ratio", "wins")} for s, r in result.items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
