"""Can the network fit one fixed training batch?  The diagnostic behind benchmarks/README.md.

    python benchmarks/overfit_one_batch.py --loss full --steps 60      # the training objective
    python benchmarks/overfit_one_batch.py --loss os8 --steps 150      # OS8 L1 (x10) + 5 x attention loss

Needs the default data (``dvc repro synth_image_train``).  Prints, every 10 steps, the
10/50/90% quantiles of the OS8 logits on foreground (alpha > 0.9) and background pixels and
the OS8 MAD, next to the MAD of the guidance mask used as the matte.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import default_collate

from maggie.config.params import load_params, stage_settings
from maggie.data.train_sets import build_train_dataset
from maggie.models import DecoderState, MaGGIe, MaggieConfig
from maggie.models.maggie.objective import training_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loss", choices=["full", "os8"], default="full")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    torch.manual_seed(0)
    params = load_params(args.params)
    weights, _ = stage_settings(params, "image")
    data = build_train_dataset(params, "image")
    batch = default_collate([data.sample(i, i) for i in range(4)])
    model = MaGGIe(MaggieConfig(warmup_detail_iter=30)).train()
    logits = {}
    model.decoder.refine_OS8.register_forward_hook(lambda m, i, o: logits.__setitem__("os8", o["logits"].detach()))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gt = batch["alpha"].flatten(0, 1)
    valid = (batch["mask"].flatten(0, 1).sum((2, 3)) > 0)[..., None, None]
    mask_mad = float((batch["mask"] - batch["alpha"]).abs().mean())
    q = torch.tensor([0.1, 0.5, 0.9])
    for step in range(1, args.steps + 1):
        out = model(batch["image"], batch["mask"], state=DecoderState(iteration=step, gt_alpha=gt))
        if args.loss == "full":
            loss = training_loss(out, batch, weights)["total"]
        else:
            loss = (out["alpha_os8"] - batch["alpha"]).abs().mean() * 10 + 5 * out["loss_atten"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            lg = torch.nn.functional.interpolate(logits["os8"], size=gt.shape[-2:], mode="bilinear")
            fg, bg = lg[(gt > 0.9) & valid], lg[(gt == 0) & valid]
            mad = float((out["alpha_os8"].detach() - batch["alpha"]).abs().mean())
            print(f"step {step:4d}  fg logit q10/50/90 {[round(float(x), 2) for x in fg.quantile(q)]}  "
                  f"bg {[round(float(x), 2) for x in bg.quantile(q)]}  OS8 MAD {mad:.4f}  mask MAD {mask_mad:.4f}")


if __name__ == "__main__":
    main()
