"""What a training run is made of: its batches, network, optimiser and precision.

Every step's samples and augmentations are a pure function of (seed, step, position), so a run
killed and restarted produces the same batches as one that never stopped, on any number of
processes and loader workers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from maggie.config.params import ModelSettings, ParamsError, TrainSettings
from maggie.engine.pretrained_encoder import load_pretrained_encoder, resolve_pretrained
from maggie.models import build_model
from maggie.models.maggie.encoder import ShortcutEncoder


def step_indices(seed: int, step: int, batch: int, size: int) -> list[tuple[int, int]]:
    """(sample index, sample seed) for every position of a global batch: epochs are seeded permutations."""
    out = []
    for pos in range(batch):
        flat = step * batch + pos
        epoch, offset = divmod(flat, size)
        perm = np.random.default_rng([seed, epoch]).permutation(size)
        out.append((int(perm[offset]), int(np.random.default_rng([seed, step, pos]).integers(2**31))))
    return out


class StepBatches(torch.utils.data.Dataset):
    """Samples of one rank for steps ``start..stop``; item i is the i-th sample of this rank."""

    def __init__(self, dataset, seed: int, start: int, stop: int, batch: int, rank: int, world: int):
        self.dataset, self.seed, self.start, self.batch = dataset, seed, start, batch
        self.rank, self.world = rank, world
        self.per_rank = batch // world
        self.length = (stop - start) * self.per_rank

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        step, pos = divmod(i, self.per_rank)
        index, sample_seed = step_indices(self.seed, self.start + step, self.batch, len(self.dataset))[
            self.rank * self.per_rank + pos]
        return self.dataset.sample(index, sample_seed)


def build_dataset(params: dict[str, Any], stage: str):
    from maggie.data.train_sets import build_train_dataset

    return build_train_dataset(params, stage)


def make_loader(dataset, tset: TrainSettings, start: int, rank: int, world: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        StepBatches(dataset, tset.seed, start, tset.max_iter, tset.batch_size, rank, world),
        batch_size=tset.batch_size // world, shuffle=False, num_workers=tset.num_workers,
        persistent_workers=False, drop_last=False,
        # Its own generator: iterating must not draw from the global RNG that a resume restores.
        generator=torch.Generator().manual_seed(tset.seed))


def build_network(mset: ModelSettings, stage: str) -> nn.Module:
    """The stage's network, freshly initialised (with GCA-Matting's encoder if ``encoder_args.pretrained``)."""
    model = build_model(mset.arch, max_inst=mset.max_inst, warmup_detail_iter=mset.warmup_detail_iter,
                        refine_mode=mset.refine_mode, routing_init=mset.routing_init,
                        guidance_stem_init=mset.guidance_stem_init)
    pretrained = resolve_pretrained((mset.encoder_args or {}).get("pretrained"))
    if pretrained is not None:
        if not isinstance(getattr(model, "encoder", None), ShortcutEncoder):
            raise ParamsError(f"model.{stage}.encoder_args.pretrained: {mset.arch} has no ResNet-34 encoder to load")
        load_pretrained_encoder(model.encoder, pretrained)
    return model


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def select_trainable(model: nn.Module, prefixes: list[str]) -> int:
    """Train only the parameters whose names start with one of ``prefixes`` (all when empty); returns their count.

    The warm start's video run trains only the temporal modules, so that they fit the image network
    they are shipped to sit on."""
    if not prefixes:
        return sum(p.numel() for p in model.parameters())
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unknown:
        raise ParamsError(f"train.*.train_only: no parameter starts with {', '.join(map(repr, unknown))}")
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(x) for x in prefixes))
        count += p.numel() if p.requires_grad else 0
    return count


def train_mode(model: nn.Module, frozen_bn_stats: bool = False) -> None:
    """``model.train()``, except batch norms whose parameters are all frozen (or every batch norm, with
    ``frozen_bn_stats``): their running statistics stay those of the weights they came with.  Fine-tuning on
    a few clips per step would otherwise replace statistics gathered over many thousand images."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if frozen_bn_stats or (params and not any(p.requires_grad for p in params)):
                m.eval()


def build_optimizer(model: nn.Module, tset: TrainSettings):
    """AdamW with a linear warm-up and a cosine decay to 0 at ``max_iter`` (the reference's schedule)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=tset.lr,
                                  betas=tuple(tset.betas), weight_decay=tset.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: warmup_cosine(i, tset.warmup_iters, tset.max_iter))
    return optimizer, scheduler


def precision_setup(requested: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if requested == "fp32" or (requested == "auto" and device.type != "cuda"):
        return None, False
    if requested == "bf16" or (requested == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    if requested in ("fp16", "auto"):
        if device.type != "cuda":
            raise ParamsError("train.*.precision fp16 needs a CUDA device; use fp32 or bf16 on this machine")
        return torch.float16, True
    raise ParamsError(f"train.*.precision must be auto, fp32, fp16 or bf16, got {requested!r}")
