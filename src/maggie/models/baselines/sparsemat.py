"""SparseMat baseline (reference arch ``SparseMat_SingInst``: encoder ``lpn``, decoder ``shm``).

Per instance: the low-resolution network (``lpn``) predicts a matte from RGB + mask at half
resolution; the pixels where it is uncertain (0.01 < alpha < 0.99, dilated by a 15x15 max-pool)
are refined at full resolution by the sparse module (``shm``); elsewhere the upsampled
low-resolution matte is kept.  On clips, frames after the first refine only where the image
changed and copy the previous output where it did not (the reference's inference path).

Reference quirks kept, because the published numbers come from them:

* The SHM's context gate pools with the *first* frame's low-resolution matte for every frame
  of a clip (the reference passes the whole clip's mattes where one frame's is meant).
* The SHM decoder treats ImageNet-normalised RGB as if it were in [-1, 1] (``x * 0.5 + 0.5``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.baselines.sparsemat_lpn import LPN
from maggie.models.baselines.sparsemat_shm import SHM
from maggie.models.maggie.network import check_inputs
from maggie.models.ops.loss_terms import gradient_loss, laplacian_loss

SPARSEMAT_ARCHS = ("sparsemat",)
TRAIN_SITE_CAP = 1_600_000  # the reference's hard-coded cap on refined sites per training batch


@dataclass
class SparseMatConfig:
    arch: str = "sparsemat"
    mid_channels: int = 32
    dilation_kernel: int = 15

    def to_dict(self) -> dict:
        return asdict(self)


def _half_and_pad(x: torch.Tensor, multiple: int = 64) -> torch.Tensor:
    x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pw, 0, ph))


class SparseMat(nn.Module):
    archs = SPARSEMAT_ARCHS
    is_video = True  # refines clips frame to frame when given several frames

    def __init__(self, cfg: SparseMatConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or SparseMatConfig()
        if cfg.arch not in self.archs:
            raise ValueError(f"unknown SparseMat arch {cfg.arch!r}; expected one of {self.archs}")
        self.lpn = LPN(4, cfg.mid_channels)
        self.shm = SHM(4)

    def uncertain(self, alpha: torch.Tensor) -> torch.Tensor:
        """0/1 map: dilated (0.01 < alpha < 0.99)."""
        k = self.cfg.dilation_kernel
        band = ((alpha > 0.01) & (alpha < 0.99)).to(alpha.dtype)
        return F.max_pool2d(band, k, 1, k // 2)

    def low_res(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[M, 3, H, W]`` + one mask each ``[M, 1, H, W]`` -> (matte at ``H x W``, context)."""
        h, w = image.shape[-2:]
        lr, ctx = self.lpn(torch.cat([_half_and_pad(image), _half_and_pad(mask)], 1))
        lr = F.interpolate(lr, scale_factor=2.0, mode="bilinear", align_corners=False)[:, :, :h, :w]
        return lr, ctx

    def refine(self, image: torch.Tensor, lr: torch.Tensor, active: torch.Tensor, ctx: torch.Tensor,
               gate_alpha: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([image, (lr - 0.5) / 0.5], 1)
        return self.shm(x, active, ctx, gate_alpha)

    def clip_pass(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One clip, one instance (eval): frames ``[T, 3, H, W]``, masks ``[T, 1, H, W]`` -> ``[T, 1, H, W]``."""
        lr, ctx = self.low_res(image, mask)
        regions = [self.uncertain(lr[:1])]
        shared = []
        for i in range(1, image.shape[0]):
            diff = (image[i:i + 1] - image[i - 1:i]).abs().mean(1, keepdim=True)
            box = F.conv2d(diff, diff.new_ones(1, 1, 9, 9), padding=4)
            still = ((box < 0.05) & (diff < 0.001)).to(image.dtype)
            k = self.cfg.dilation_kernel
            changed = F.max_pool2d(1 - still, k, 1, k // 2)
            regions.append(F.max_pool2d(self.uncertain(lr[i:i + 1]) * changed, k, 1, k // 2))
            shared.append(still)
        out, last = [], None
        for i in range(image.shape[0]):
            region = regions[i]
            active = region[:, 0] > 0
            if active.any():
                refined = self.refine(image[i:i + 1], lr[i:i + 1], active, ctx[i:i + 1], lr[:1])[-1]
            else:
                refined = lr[i:i + 1]
            if last is None:
                last = refined * region + lr[i:i + 1] * (1 - region)
            else:
                keep = shared[i - 1]
                last = refined * region + lr[i:i + 1] * (1 - region) * (1 - keep) + last * (1 - region) * keep
            out.append(last)
        return torch.cat(out, 0)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prev_alpha: torch.Tensor | None = None,
                state=None) -> dict[str, torch.Tensor]:
        """image ``[B, T, 3, H, W]``, mask ``[B, T, N, H, W]`` -> ``{"alpha": [B, T, N, H, W]}``.

        Eval runs each instance (and each batch item) on its own.  Training takes one mask slot
        and also returns the four refinement mattes, the low-resolution matte and the region."""
        mask = check_inputs(image, mask)
        b, t, n, h, w = mask.shape
        if self.training:
            if n != 1:
                raise ValueError(f"sparsemat trains on 1 mask slot, got {n}")
            return self.train_pass(image.flatten(0, 1), mask.flatten(0, 1), b, t)
        alphas = torch.stack([torch.stack([self.clip_pass(image[bi], mask[bi, :, i:i + 1])[:, 0]
                                           for i in range(n)], 1) for bi in range(b)])
        return {"alpha": alphas}

    def train_pass(self, image: torch.Tensor, mask: torch.Tensor, b: int, t: int) -> dict[str, torch.Tensor]:
        lr, ctx = self.low_res(image, mask)
        with torch.no_grad():
            region = self.uncertain(lr)
            active = region[:, 0] > 0
            sites = int(active.sum())
            if sites > TRAIN_SITE_CAP:  # keep a random subset of sites, as the reference does
                keep = torch.zeros(sites, dtype=torch.bool, device=active.device)
                keep[torch.randperm(sites, device=active.device)[:TRAIN_SITE_CAP]] = True
                active = active.clone()
                active[active.clone()] = keep
        preds = self.refine(image, lr.detach(), active, ctx, lr)
        h, w = image.shape[-2:]
        preds = [F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False) for p in preds]
        preds = [p * region + lr * (1 - region) for p in preds]
        shape = (b, t, 1, h, w)
        return {"alpha": preds[-1].reshape(shape), "refinements": torch.stack(preds, 0).reshape(4, *shape),
                "alpha_lr": lr.reshape(shape), "region": region.reshape(shape)}


def sparsemat_loss(out: dict[str, torch.Tensor], gt: torch.Tensor, w_l1: float = 1.0, w_lap: float = 0.05,
                   w_grad: float = 0.05) -> dict[str, torch.Tensor]:
    """The reference's loss: L1 + Laplacian + gradient on each of the four refinements, weighted
    2, 1, 0.5, 0.25 from the finest to the coarsest; no region weighting."""
    gt = gt.flatten(0, 2)[:, None]
    terms = {"loss_rec": 0.0, "loss_lap": 0.0, "loss_grad": 0.0}
    for k, pred in enumerate(reversed(list(out["refinements"]))):
        weight = 2.0 / 2 ** k
        p = pred.flatten(0, 2)[:, None]
        terms["loss_rec"] = terms["loss_rec"] + weight * F.l1_loss(p, gt)
        # Unweighted, the reference's LapLoss is a plain per-level mean: the 3x channel
        # triplication that ``laplacian_loss`` keeps for MaGGIe's weighted loss cancels out.
        ones = torch.ones_like(gt)
        terms["loss_lap"] = terms["loss_lap"] + weight * laplacian_loss(p, gt, ones) / 3.0
        terms["loss_grad"] = terms["loss_grad"] + weight * gradient_loss(p, gt, ones)
    total = w_l1 * terms["loss_rec"] + w_lap * terms["loss_lap"] + w_grad * terms["loss_grad"]
    return {**terms, "total": total}
