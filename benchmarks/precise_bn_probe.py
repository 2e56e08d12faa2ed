"""Are the warm start's batch-norm statistics what limits it?  Recompute them as a population average.

    python benchmarks/precise_bn_probe.py pretrain/maggie_default_image.safetensors --batches 100

Every batch norm's running statistics are reset and recomputed as the cumulative average over ``--batches``
batches of the image training loader (train mode, no gradients, the detail branch past its warm-up), then
the network is evaluated on the 20 image benchmarks as the report does.  Training keeps an exponential
average with momentum 0.1, i.e. roughly the last ten batches of four crops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params, stage_settings  # noqa: E402
from maggie.engine.build import build_dataset, make_loader  # noqa: E402
from maggie.evaluation.benchmarks import against_mask  # noqa: E402
from maggie.models import DecoderState, load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    args = ap.parse_args()
    params = load_params(args.params)
    _, tset = stage_settings(params, "image")
    tset.max_iter, tset.batch_size = args.batches, args.batch_size
    model = load_model(args.weights)
    before = against_mask(model.eval(), params)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for batch in make_loader(build_dataset(params, "image"), tset, 0, 0, 1):
            model(batch["image"], batch["mask"],
                  state=DecoderState(iteration=10**9, gt_alpha=batch["alpha"].flatten(0, 1)))
    after = against_mask(model.eval(), params)
    for subset in after:
        print(f"{subset}: MAD {before[subset]['MAD']:.0f} ({before[subset]['ratio']:.3f}x the mask) -> "
              f"{after[subset]['MAD']:.0f} ({after[subset]['ratio']:.3f}x) with recomputed statistics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
