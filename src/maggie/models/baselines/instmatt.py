"""InstMatt (Sun et al., CVPR 2022), as its authors' code (``nowsyn/InstMatt``) runs it.

Each instance gets a *tri-mask* (its own mask T, the other instances R, the background B) and
goes through an MGM network with 3 guidance channels in and a T/R/B *tri-matte* out, one
instance at a time.  The OS8/OS4/OS1 heads are fused progressively with one uncertainty map
per instance (the maximum over its three channels).  Then the multi-instance refiner
(``refiner.MultiInstRefiner``) rewrites the tri-mattes of all instances together in square
windows where they disagree, and the result replaces the fused tri-matte inside the OS1 band.
The matte of an instance is its T channel.  Its spectral norms evaluate with the stored
``u``/``v`` (no power iteration), as the authors' do.  State-dict keys are the authors' (``encoder``,
``aspp``, ``decoder`` as MGM's; ``refiner.split/merge/head``), so their checkpoint loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from maggie.models.baselines.instmatt_refiner import MultiInstRefiner
from maggie.models.baselines.mgm import MGMDecoder
from maggie.models.maggie.aspp import ASPP
from maggie.models.maggie.encoder import ShortcutEncoder
from maggie.models.maggie.network import check_inputs
from maggie.models.ops.blocks import xavier_init
from maggie.models.ops.loss_terms import pyramid_l1, weighted_l1
from maggie.models.ops.morphology import compute_unknown
from maggie.models.ops.spectral_norm import _SNWeights, preserved_power_iteration

INSTMATT_ARCHS = ("instmatt",)


@dataclass
class InstMattConfig:
    arch: str = "instmatt"
    max_inst: int = 10  # not a network shape: any number of instances; kept for the training loader
    refine: bool = True  # False: backbone and progressive refinement only (the authors' stage 1)

    def to_dict(self) -> dict:
        return asdict(self)


def tri_masks(masks: torch.Tensor) -> torch.Tensor:
    """``[..., N, H, W]`` masks -> ``[..., N, 3, H, W]`` (T = own, R = sum of the others, B = 1 - sum).

    As the authors' inference builds them: sums, not unions, and no clamping, so overlapping
    masks give R > 1 and B < 0 (their training loader used unions; their weights expect this)."""
    total = masks.sum(-3, keepdim=True)
    return torch.stack([masks, total - masks, (1 - total).expand_as(masks)], -3)


def fuse_trimattes(out: dict[str, torch.Tensor], train: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Progressive refinement of ``[V, 3, H, W]`` tri-mattes -> (fused, band_os4, band_os1).

    Evaluation takes one band per instance, the maximum over T/R/B, as the authors' inference;
    training fuses each channel in its own band (their stage-2 trainer).  Bands: ``[V, 1, H, W]``."""
    alpha = out["alpha_os8"]
    w4 = compute_unknown(alpha, 30, train=train)
    if not train:
        w4 = w4.amax(1, keepdim=True)
    alpha = torch.where(w4 > 0, out["alpha_os4"], alpha)
    w1 = compute_unknown(alpha, 15, train=train)
    if not train:
        w1 = w1.amax(1, keepdim=True)
    alpha = torch.where(w1 > 0, out["alpha_os1"], alpha)
    return alpha, w4.amax(1, keepdim=True), w1.amax(1, keepdim=True)


class InstMatt(nn.Module):
    archs = INSTMATT_ARCHS
    is_video = False

    def __init__(self, cfg: InstMattConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or InstMattConfig()
        if cfg.arch not in self.archs:
            raise ValueError(f"unknown InstMatt arch {cfg.arch!r}; expected one of {self.archs}")
        self.encoder = ShortcutEncoder(num_mask=3, num_embed=0)
        self.aspp = ASPP(512, 512)
        self.decoder = MGMDecoder(3, return_feature=True)
        xavier_init(self.aspp, self.decoder)
        self.refiner = MultiInstRefiner(32, 16)
        for m in self.modules():  # the authors' spectral norm has no power iteration in evaluation
            if isinstance(m, _SNWeights):
                m.iterate_in_eval = False

    def backbone(self, image: torch.Tensor, trimask: torch.Tensor) -> dict[str, torch.Tensor]:
        """image ``[V, 3, H, W]``, tri-masks ``[V, 3, H, W]`` -> tri-mattes at OS8/OS4/OS1 and OS1 features."""
        feats, mid = self.encoder(image, trimask)
        return self.decoder(self.aspp(feats), mid["shortcut"])

    def image_pass(self, image: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """One image ``[3, H, W]`` with its instances ``[N, H, W]`` -> tri-mattes ``[N, 3, H, W]``."""
        if masks.shape[0] == 0:
            empty = masks.new_zeros(0, 3, *masks.shape[-2:])
            return {"trimatte": empty, "alpha_os8": empty, "alpha_os4": empty, "alpha_os1": empty}
        guide = tri_masks(masks)
        passes = [self.backbone(image[None], guide[i:i + 1]) for i in range(masks.shape[0])]  # one at a time
        out = {k: torch.cat([p[k] for p in passes]) for k in passes[0]}
        fused, _, w1 = fuse_trimattes(out)
        if self.cfg.refine:
            refined = self.refiner.refine(image.expand(len(masks), -1, -1, -1), fused, out["feature"])
            fused = torch.where(w1 > 0, refined, fused)
        return {"trimatte": fused, "alpha_os8": out["alpha_os8"], "alpha_os4": out["alpha_os4"],
                "alpha_os1": out["alpha_os1"]}

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prev_alpha: torch.Tensor | None = None,
                state=None) -> dict[str, torch.Tensor]:
        """image ``[B, T, 3, H, W]``, mask ``[B, T, N, H', W']`` -> mattes ``[B, T, N, H, W]`` (frame by frame).

        Also ``trimatte`` ``[B, T, N, 3, H, W]`` (T/R/B), and the heads' T channels as ``alpha_os*``."""
        mask = check_inputs(image, mask)
        if self.training:
            return self.training_pass(image, mask)
        b, t = image.shape[:2]
        frames = []
        with preserved_power_iteration(self):
            for f in range(b * t):
                out = self.image_pass(image.flatten(0, 1)[f], mask.flatten(0, 1)[f])
                frames.append({"alpha": out["trimatte"][:, 0], "trimatte": out["trimatte"],
                               **{k: out[k][:, 0] for k in ("alpha_os8", "alpha_os4", "alpha_os1")}})
        return {k: torch.stack([fr[k] for fr in frames]).reshape(b, t, *frames[0][k].shape) for k in frames[0]}

    def training_pass(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """All instances of the batch through the backbone at once, then the refiner image by image.

        Slots without a mask are left out (zeros in the outputs).  The refiner reads detached
        tri-mattes and features, so its loss trains only the refiner, as in the authors' stage 2
        (here both stages train together).  Outputs ``trimatte_*`` ``[B, T, N, 3, H, W]``,
        ``refined`` ``[I, B, T, N, 3, H, W]`` (one per refiner iteration) and the bands."""
        b, t, n, h, w = mask.shape
        img, masks = image.flatten(0, 1), mask.flatten(0, 1)
        valid = masks.flatten(2).amax(-1) > 0
        if not valid.any():
            valid[0, 0] = True
        fi, ii = valid.nonzero(as_tuple=True)
        out = self.backbone(img[fi], tri_masks(masks)[fi, ii])
        fused, w4, w1 = fuse_trimattes(out, train=True)
        iterations = int(torch.randint(1, 4, ()))
        refined = [fused.detach().clone() for _ in range(iterations)]
        if self.cfg.refine:
            for f in fi.unique().tolist():
                sel = (fi == f).nonzero(as_tuple=True)[0]
                steps = self.refiner.refine_train(img[f].expand(len(sel), -1, -1, -1), fused[sel].detach(),
                                                  out["feature"][sel].detach(), iterations)
                for k, step in enumerate(steps):
                    refined[k] = refined[k].index_put((sel,), step)

        def scatter(x: torch.Tensor) -> torch.Tensor:
            full = x.new_zeros(b * t, n, *x.shape[1:])
            full = full.index_put((fi, ii), x)
            return full.reshape(b, t, n, *x.shape[1:])

        result = {f"trimatte_{k[6:]}": scatter(out[k]) for k in ("alpha_os8", "alpha_os4", "alpha_os1")}
        result["refined"] = torch.stack([scatter(r) for r in refined])
        result["weight_os4"], result["weight_os1"] = scatter(w4[:, 0]), scatter(w1[:, 0])
        result["valid"] = valid.reshape(b, t, n)
        for k in ("os8", "os4", "os1"):
            result[f"alpha_{k}"] = result[f"trimatte_{k}"][:, :, :, 0]
        result["alpha"] = result["refined"][-1][:, :, :, 0]
        return result


def trimatte_targets(alpha: torch.Tensor) -> torch.Tensor:
    """True mattes ``[..., N, H, W]`` -> T/R/B targets ``[..., N, 3, H, W]`` (own, the others', background)."""
    total = alpha.sum(-3, keepdim=True)
    return torch.stack([alpha, total - alpha, (1 - total).clamp(0, 1).expand_as(alpha)], -3)


def instmatt_loss(out: dict[str, torch.Tensor], gt: torch.Tensor, w_rec: float = 1.0, w_lap: float = 1.0,
                  w_sum_one: float = 1.0) -> dict[str, torch.Tensor]:
    """The authors' objective on the instances that have a mask, without its composition term.

    Each term (L1, 5-level Laplacian, and |T + R + B - 1|) is taken on the OS1, OS4 and OS8
    tri-mattes weighted 2:1:1 and divided by 5 (OS8 everywhere, OS4/OS1 in their bands), plus the
    mean over the refiner's iterations inside the OS1 band.  The composition term needs the
    foreground colours of each group, which the training loader does not keep."""
    valid = out["valid"]
    target = trimatte_targets(gt)[valid]  # [V, 3, H, W]
    w4, w1 = out["weight_os4"][valid][:, None], out["weight_os1"][valid][:, None]
    w8 = torch.ones_like(w1)

    def terms(pred: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        one = weighted_l1(pred.sum(1, keepdim=True), torch.ones_like(weight), weight)
        return weighted_l1(pred, target, weight), pyramid_l1(pred, target, weight), one

    parts = [terms(out[f"trimatte_{k}"][valid], w) for k, w in (("os1", w1), ("os4", w4), ("os8", w8))]
    rec, lap, one = ((2 * a + b + c) / 5 for a, b, c in zip(*parts, strict=True))
    refined = [terms(r[valid], w1) for r in out["refined"]]
    ref_rec, ref_lap, ref_one = (sum(x) / len(refined) for x in zip(*refined, strict=True))
    loss = {"loss_rec": rec + ref_rec, "loss_lap": lap + ref_lap, "loss_sum_one": one + ref_one}
    loss["total"] = w_rec * loss["loss_rec"] + w_lap * loss["loss_lap"] + w_sum_one * loss["loss_sum_one"]
    return loss
