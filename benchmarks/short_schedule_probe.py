"""Why a short from-scratch run does not learn: train the image network a few hundred steps, then probe it.

    python benchmarks/short_schedule_probe.py --steps 200 --crop 96                        # the default recipe
    python benchmarks/short_schedule_probe.py --steps 200 --crop 96 --routing-init --stem-init --bce 1

Needs the default data (``dvc repro synth_image_train synth_image_test``).  Trains with the
default objective and ``params.yaml``'s optimiser settings, optionally with three changes
that are not in the pipeline (yet):

* ``--routing-init``: the query and key projections of every IMD cross-attention start as the
  same random orthogonal matrix, so the ID embedding routes each pixel to its own token from
  step 0 (with independent xavier projections the match is random: ~0.5 of a pixel's
  attention lands on its own token at init);
* ``--stem-init``: the stem weights that read the guidance-mask channels start non-zero
  (the reference zeroes them because it loads a pretrained RGB stem);
* ``--bce W``: an auxiliary binary cross-entropy on the OS8 logits (``alpha8 = sigmoid(2 z)``),
  whose gradient does not vanish where the L1-on-tanh loss has saturated.

Prints the OS8 logits inside/outside the guidance masks, the attention routing and the MAD
(x1e3 scale as in ``evaluate``) on the first images of two test benchmarks, next to the mask's.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import default_collate

from maggie.config.params import load_params, stage_settings
from maggie.engine.build import StepBatches, build_dataset, warmup_cosine
from maggie.evaluation.benchmarks import evaluate_images
from maggie.models import DecoderState, build_model
from maggie.models.maggie.network import share_query_key_init
from maggie.models.registry import training_objective


def routing_init(model: nn.Module) -> None:
    share_query_key_init(model.decoder.refine_OS8)


def stem_init(model: nn.Module) -> None:
    w = model.encoder.conv1.module.weight_bar
    with torch.no_grad():
        w[:, 3:] = torch.randn_like(w[:, 3:]) * w[:, :3].std() * 3


def os8_bce(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """BCE of sigmoid(2 z) against the true alpha averaged to OS8, over the slots that hold an instance."""
    gt = batch["alpha"].flatten(0, 1)
    g8 = F.adaptive_avg_pool2d(gt, logits.shape[-2:])
    valid = ((gt.sum((2, 3)) > 0) | (batch["mask"].flatten(0, 1).sum((2, 3)) > 0)).float()[..., None, None]
    bce = F.binary_cross_entropy_with_logits(2 * logits, g8, reduction="none")
    return (bce * valid).sum() / (valid.sum() * logits.shape[-2] * logits.shape[-1]).clamp_min(1)


@torch.no_grad()
def probe(model: nn.Module, batch: dict[str, torch.Tensor], cap: dict) -> str:
    """OS8 logits inside/outside the masks and how the pixel->token attention is routed.

    The train-mode forward would fold the probe batch into the batch-norm running statistics
    and the spectral-norm vectors of the model being trained; its state is restored after.
    """
    saved = copy.deepcopy(model.state_dict())
    model.train()
    model(batch["image"], batch["mask"], state=DecoderState(iteration=10**6, gt_alpha=batch["alpha"].flatten(0, 1)))
    model.load_state_dict(saved)
    z, p2t = cap["logits"], cap["p2t"]
    m8 = F.adaptive_avg_pool2d(batch["mask"].flatten(0, 1), z.shape[-2:]) > 0
    valid = m8.flatten(2).any(-1)[..., None, None]
    ids = (m8 * torch.arange(1, m8.shape[1] + 1)[None, :, None, None]).amax(1).flatten(1)  # [B, L]
    own = torch.cat([p2t[b, ids[b] > 0].gather(1, (ids[b, ids[b] > 0] - 1)[:, None]).flatten()
                     for b in range(p2t.shape[0])])
    return (f"OS8 logit inside masks {float(z[m8 & valid].mean()):+.2f} outside {float(z[~m8 & valid].mean()):+.2f}; "
            f"pixel->own-token attention {float(own.mean()):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-images", type=int, default=6)
    ap.add_argument("--routing-init", action="store_true")
    ap.add_argument("--stem-init", action="store_true")
    ap.add_argument("--bce", type=float, default=0.0)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    params = load_params(args.params)
    params["dataset"]["train"]["image"]["crop"] = [args.crop, args.crop]
    mset, tset = stage_settings(params, "image")
    torch.manual_seed(tset.seed)
    np.random.seed(tset.seed)
    data = build_dataset(params, "image")
    model = build_model(mset.arch, max_inst=mset.max_inst, warmup_detail_iter=mset.warmup_detail_iter,
                        refine_mode=mset.refine_mode)
    if args.routing_init:
        routing_init(model)
    if args.stem_init:
        stem_init(model)
    cap: dict = {}
    imd = model.decoder.refine_OS8
    imd.register_forward_hook(lambda m, i, o: cap.__setitem__("logits", o["logits"]))
    imd.feat_token_ca_layers[-1].register_forward_hook(lambda m, i, o: cap.__setitem__("p2t", o[1]))
    probe_batch = default_collate([data.sample(i, i) for i in range(100, 104)])
    print(f"step 0: {probe(model, probe_batch, cap)}", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=tset.lr, betas=tuple(tset.betas), weight_decay=tset.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, tset.warmup_iters, args.steps))
    loader = torch.utils.data.DataLoader(StepBatches(data, tset.seed, 0, args.steps, tset.batch_size, 0, 1),
                                         batch_size=tset.batch_size, num_workers=1)
    t0 = time.time()
    for step, batch in enumerate(loader, start=1):
        model.train()
        out = model(batch["image"], batch["mask"],
                    state=DecoderState(iteration=step, gt_alpha=batch["alpha"].flatten(0, 1)))
        loss = training_objective(mset.arch)(out, batch, mset)["total"]
        if args.bce > 0:
            loss = loss + args.bce * os8_bce(cap["logits"], batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tset.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tset.clip_grad_norm)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            parts = []
            for subset, source in (("in_dist", "sim02_coarse28_jitter"), ("held_out", "sim06_thin_missed")):
                r = evaluate_images(model, params, subset, source, limit=args.eval_images, names=("MAD",),
                                    validation=True)
                parts.append(f"{subset}/{source} MAD {r['maggie']['MAD']:.0f} (mask {r['mask_as_alpha']['MAD']:.0f})")
            print(f"step {step} ({(time.time() - t0) / step:.2f} s/step): {probe(model, probe_batch, cap)}; "
                  + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
