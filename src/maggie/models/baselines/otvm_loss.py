"""OTVM's training objective and its ground-truth trimaps, as the authors train stage 4.

Sources (github.com/Hongje/OTVM): ``models/alpha/model.py`` (``FullModel.fba_single_image_loss``
and the trimap cross-entropy in ``FullModel.forward``), ``utils/loss_func.py`` (``L1_mask``,
``L1_grad``, ``exclusion_loss``, ``LapLoss``), ``train.py`` (total = the sum of the four losses)
and ``dataset.py`` (``make_trimap`` and its random draws in ``VideoMatting108_Train``).

Per head (FBA's decoder output and, stages 3-4, the refined output), with every frame's terms
averaged over the T frames, all weights the authors':

* alpha_comp = L1(alpha) + L1(F*g + B*(1-g), I) + 0.25 (L1(fg*alpha + bg*(1-alpha), I) + L1(F) + L1(B))
* lap        = Laplacian-pyramid L1 of alpha (5 levels, level i weighted 2^i, normalised by the
  full-resolution size) + 0.25 (the same on F and on B)
* grad       = L1 of gradient magnitudes of alpha + 0.25 exclusion(F, B), plus the temporal
  coherence MSE((a_t - a_{t-1}) - (g_t - g_{t-1})) + 0.25 (the same on F and on B)

with g the true alpha, I the image, fg / bg the true foreground / background layers, and F (B) the
predicted layer only inside the ground-truth unknown region where g > 0 (the unknown region), the
true layer elsewhere.  Then trimap = CE(propagated logits of frames 1..T-1) + CE(refined logits of
all frames), against the ground-truth trimaps.  Total = alpha_comp + lap + grad + trimap, each
summed over the two heads.

Without ``fg`` / ``bg`` the terms that need the true layers are skipped (composition with the
predicted F/B, fb_comp, F/B L1, F/B Laplacian, exclusion, F/B temporal coherence): what is left is
the alpha L1, alpha Laplacian, alpha gradient and alpha temporal terms and the trimap CE.  F and B
then learn only through FBA's fusion into alpha.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor
from torch.nn import functional as F

from maggie.models.baselines.otvm import trimap_to_onehot

EPS = 1.001e-5  # the authors' epsilon in L1_grad and exclusion_loss
_K1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
GAUSS5 = torch.outer(_K1, _K1) / 256.0  # LapLoss.KERNEL (OpenCV's pyrDown kernel)


def _gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences, zero in the last column / row (``get_gradient``)."""
    dy = F.pad(x[:, :, 1:, :] - x[:, :, :-1, :], (0, 0, 0, 1))
    dx = F.pad(x[:, :, :, 1:] - x[:, :, :, :-1], (0, 1, 0, 0))
    return dx, dy


def grad_l1(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean |(|grad pred|) - (|grad gt|)| with magnitudes sqrt(dx^2 + dy^2 + 1.001e-5) (``L1_grad``)."""
    fx, fy = _gradient(pred)
    tx, ty = _gradient(gt)
    return torch.mean(torch.abs(torch.sqrt(fx**2 + fy**2 + EPS) - torch.sqrt(tx**2 + ty**2 + EPS)))


def exclusion_loss(img1: Tensor, img2: Tensor, levels: int = 3) -> Tensor:
    """Gradient exclusion of two layers ``[B, C, H, W]`` (``exclusion_loss``, from Zhang et al.'s
    reflection removal): at each of ``levels`` 2x-average-pooled scales, mean over pixels of the
    product of the squashed squared gradients (``img2``'s rescaled by the ratio of mean gradient
    sizes *over the whole batch*), to the power 1/4, per sample; averaged over levels and batch."""
    lx, ly = [], []
    for _ in range(levels):
        gx1, gy1 = _gradient(img1)
        gx2, gy2 = _gradient(img2)
        ax = 2.0 * torch.mean(torch.abs(gx1)) / (torch.mean(torch.abs(gx2)) + EPS)
        ay = 2.0 * torch.mean(torch.abs(gy1)) / (torch.mean(torch.abs(gy2)) + EPS)
        sx1, sy1 = torch.sigmoid(gx1) * 2 - 1, torch.sigmoid(gy1) * 2 - 1
        sx2, sy2 = torch.sigmoid(gx2 * ax) * 2 - 1, torch.sigmoid(gy2 * ay) * 2 - 1
        lx.append((torch.mean((sx1**2) * (sx2**2), dim=(1, 2, 3)) + EPS) ** 0.25)
        ly.append((torch.mean((sy1**2) * (sy2**2), dim=(1, 2, 3)) + EPS) ** 0.25)
        img1 = F.avg_pool2d(img1, kernel_size=2, stride=2)
        img2 = F.avg_pool2d(img2, kernel_size=2, stride=2)
    return torch.mean(sum(lx) / float(levels)) + torch.mean(sum(ly) / float(levels))


def _gauss(x: Tensor, kernel: Tensor) -> Tensor:
    c = x.shape[1]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel.to(x).repeat(c, 1, 1, 1), groups=c)


def laplacian_l1(pred: Tensor, gt: Tensor, levels: int = 5) -> Tensor:
    """The authors' ``LapLoss`` (normalised): both maps zero-padded (centred) to multiples of 32,
    5-level Laplacian pyramids (5x5 binomial kernel, reflect padding, zero-insertion upsampling),
    sum over levels of 2^level * sum |difference|, divided by the padded map's B*C*H*W.  Needs
    sides of at least 64 px after padding (the coarsest level's reflect padding)."""
    h, w = pred.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    x, y = F.pad(pred, pad), F.pad(gt, pad)

    def pyramid(cur: Tensor) -> list[Tensor]:
        bands = []
        for _ in range(levels):
            down = _gauss(cur, GAUSS5)[:, :, ::2, ::2]
            up = down.new_zeros(*down.shape[:2], down.shape[2] * 2, down.shape[3] * 2)
            up[:, :, ::2, ::2] = down
            bands.append(cur - _gauss(up, 4 * GAUSS5))
            cur = down
        return bands

    pairs = enumerate(zip(pyramid(x), pyramid(y), strict=True))
    loss = sum((2**level) * torch.sum(torch.abs(a - b)) for level, (a, b) in pairs)
    b, c, hh, ww = y.shape
    return loss / (b * c * hh * ww)


def _l1(x: Tensor, y: Tensor) -> Tensor:
    return torch.mean(torch.abs(x - y))


def fba_head_loss(pred: Tensor, gt: Tensor, unknown: Tensor, image: Tensor, fg: Tensor | None = None,
                  bg: Tensor | None = None) -> dict[str, Tensor]:
    """``fba_single_image_loss`` (normalised) of one head: pred ``[B, T, 7, H, W]`` ([alpha, F, B]),
    gt ``[B, T, 1, H, W]``, unknown ``[B, T, 1, H, W]`` (bool, the true trimap's unknown class),
    image / fg / bg ``[B, T, 3, H, W]`` in 0..1.  Returns ``alpha_comp``, ``lap``, ``grad`` (the
    head's three losses) and their parts, each averaged over frames (the temporal ones not)."""
    t_len = pred.shape[1]
    has_fb = fg is not None and bg is not None
    alpha, pf, pb = pred[:, :, :1], pred[:, :, 1:4], pred[:, :, 4:]
    parts: dict[str, list[Tensor]] = {}
    sums: dict[str, list[Tensor]] = {"alpha_comp": [], "grad": [], "lap": []}
    fs, bs = [], []

    def keep(name: str, value: Tensor) -> Tensor:
        parts.setdefault(name, []).append(value)
        return value

    for c in range(t_len):
        a, g, img = alpha[:, c], gt[:, c], image[:, c]
        l_a1 = keep("l1", _l1(a, g))
        l_ag = keep("grad_alpha", grad_l1(a, g))
        l_lap = keep("lap_alpha", laplacian_l1(a, g))
        if not has_fb:
            sums["alpha_comp"].append(l_a1)
            sums["grad"].append(l_ag)
            sums["lap"].append(l_lap)
            continue
        f_t, b_t = fg[:, c], bg[:, c]
        unk = unknown[:, c]
        c_f = torch.where((unk & (g > 0)).repeat(1, 3, 1, 1), pf[:, c], f_t)
        c_b = torch.where(unk.repeat(1, 3, 1, 1), pb[:, c], b_t)
        fs.append(c_f)
        bs.append(c_b)
        l_ac = keep("comp", _l1(c_f * g + c_b * (1.0 - g), img))
        l_fbc = keep("fb_comp", _l1(f_t * a + b_t * (1.0 - a), img))
        l_fb1 = keep("fb_l1", _l1(c_f, f_t) + _l1(c_b, b_t))
        sums["alpha_comp"].append(l_a1 + l_ac + 0.25 * (l_fbc + l_fb1))
        l_ex = keep("excl", exclusion_loss(c_f, c_b, 3))
        sums["grad"].append(l_ag + 0.25 * l_ex)
        l_lf, l_lb = laplacian_l1(c_f, f_t), laplacian_l1(c_b, b_t)
        keep("lap_fb", l_lf + l_lb)
        sums["lap"].append(l_lap + 0.25 * (l_lf + l_lb))
    out = {k: sum(v) / float(len(v)) for k, v in sums.items()}
    out.update({k: sum(v) / float(len(v)) for k, v in parts.items()})
    if t_len > 1:
        tc = F.mse_loss(alpha[:, 1:] - alpha[:, :-1], gt[:, 1:] - gt[:, :-1])
        out["tc_alpha"] = tc
        if has_fb:
            fs_, bs_ = torch.stack(fs, 1), torch.stack(bs, 1)
            tc_f = F.mse_loss(fs_[:, 1:] - fs_[:, :-1], fg[:, 1:] - fg[:, :-1])
            tc_b = F.mse_loss(bs_[:, 1:] - bs_[:, :-1], bg[:, 1:] - bg[:, :-1])
            out["tc_fb"] = tc_f + tc_b
            tc = tc + 0.25 * (tc_f + tc_b)
        out["grad"] = out["grad"] + tc
    return out


def otvm_loss(out: dict[str, Tensor], gt_alpha: Tensor, gt_trimap: Tensor, image: Tensor, fg: Tensor | None = None,
              bg: Tensor | None = None) -> dict[str, Tensor]:
    """The authors' stage-4 objective on :meth:`OTVM.forward_train`'s outputs.

    gt_alpha ``[B, T, 1, H, W]`` (the eps-snapped alpha of :func:`training_trimaps`, as the
    authors train against it), gt_trimap ``[B, T, 3, H, W]`` one-hot (bg, unknown, fg) or
    ``[B, T, 1, H, W]`` in {0, 0.5, 1}, image ``[B, T, 3, H, W]`` RGB 0..1 (the frames given to the
    network; with fg / bg it should be their composite fg*g + bg*(1-g)), fg / bg ``[B, T, 3, H, W]``
    in 0..1 or None (the F/B terms are then skipped, see the module doc).

    Returns ``total`` and the authors' four losses ``loss_alpha_comp``, ``loss_lap``, ``loss_grad``,
    ``loss_trimap`` (each summed over the heads), the trimap CE parts ``trimap_ce_prop`` /
    ``trimap_ce_refined``, and per head (``dec`` = FBA decoder, ``ref`` = refinement) the parts
    ``{head}_l1``, ``_grad_alpha``, ``_lap_alpha``, ``_tc_alpha`` and, with fg / bg, ``_comp``,
    ``_fb_comp``, ``_fb_l1``, ``_excl``, ``_lap_fb``, ``_tc_fb``."""
    tri = trimap_to_onehot(gt_trimap)
    cls = torch.argmax(tri, dim=2)  # [B, T, H, W]
    unknown = (cls == 1).unsqueeze(2)
    gt = gt_alpha.to(image.dtype)
    heads = [("dec", out["fba"])] + ([("ref", out["fba_refined"])] if "fba_refined" in out else [])
    terms: dict[str, Tensor] = {}
    totals: dict[str, Tensor] = {}
    for name, pred in heads:
        res = fba_head_loss(pred, gt, unknown, image, fg, bg)
        for k in ("alpha_comp", "lap", "grad"):
            totals[k] = res.pop(k) if k not in totals else totals[k] + res.pop(k)
        terms.update({f"{name}_{k}": v for k, v in res.items()})
    h, w = cls.shape[-2:]
    if cls.shape[1] > 1:
        ce = F.cross_entropy(out["prop_logits"].reshape(-1, 3, h, w), cls[:, 1:].reshape(-1, h, w))
        terms["trimap_ce_prop"] = ce
    else:  # a one-frame clip (the image stage) propagates nothing; the authors' mean over no frames is NaN
        ce = gt.new_zeros(())
    if "trimap_logits" in out:
        ce_ref = F.cross_entropy(out["trimap_logits"].reshape(-1, 3, h, w), cls.reshape(-1, h, w))
        terms["trimap_ce_refined"] = ce_ref
        ce = ce + ce_ref
    result = {"loss_alpha_comp": totals["alpha_comp"], "loss_lap": totals["lap"], "loss_grad": totals["grad"],
              "loss_trimap": ce}
    result["total"] = result["loss_alpha_comp"] + result["loss_lap"] + result["loss_grad"] + ce
    return {**result, **terms}


def scaled_radius(radius: int, size: int, crop_ref: int | None) -> int:
    """A radius drawn for the authors' ``crop_ref`` (320) px training crops, scaled to ``size`` px."""
    return radius if crop_ref is None else int(round(radius * size / crop_ref))


def training_trimaps(gt_alpha: Tensor, rng: random.Random, crop_ref: int | None = 320, max_radius: int = 13
                     ) -> tuple[Tensor, Tensor]:
    """Ground-truth trimaps of training clips by the authors' rule (``dataset.make_trimap`` as
    ``VideoMatting108_Train`` calls it), one random draw per clip, shared by its frames.

    gt_alpha ``[M, T, 1, H, W]`` in 0..1 (M clips).  Per clip, in the authors' order of draws
    from ``rng`` (a ``random.Random``, like theirs): eps ~ U(0.01, 0.2); radius r = randint(0, 13)
    (Python's randint includes 13: their ``max_trimap_kernel_size``); with probability 0.05 a
    "close first" step with radius rc = randint(0, 5).  Then alpha < eps -> 0, alpha > 1 - eps -> 1;
    unknown = the fractional pixels (0 < alpha < 1) dilated by a square of side 2r+1 (close first:
    the fractional pixels opened with a square of side 2rc+1 and dilated, united with the
    original ones); elsewhere fg where alpha > 0.5, bg otherwise.

    r and rc are drawn for the authors' 320x320 crops; ``crop_ref`` scales them to the clip's
    short side (round(r * min(H, W) / crop_ref)); ``crop_ref=None`` keeps them unscaled.

    Returns (trimap ``[M, T, 3, H, W]`` one-hot (bg, unknown, fg), snapped alpha ``[M, T, 1, H, W]``:
    the authors train against the snapped alpha)."""
    tris, alphas = [], []
    size = min(gt_alpha.shape[-2:])
    for a in gt_alpha.float():
        eps = rng.uniform(0.01, 0.2)
        r = scaled_radius(rng.randint(0, max_radius), size, crop_ref)
        close = rng.uniform(0, 1) < 0.05
        a = torch.where(a < eps, torch.zeros_like(a), a)
        a = torch.where(a > 1 - eps, torch.ones_like(a), a)
        unk = ((a > 0) & (a < 1.0)).float()
        if close:
            rc = scaled_radius(rng.randint(0, 5), size, crop_ref)
            ori = unk.clone()
            unk = 1.0 - F.max_pool2d(1.0 - unk, kernel_size=rc * 2 + 1, stride=1, padding=rc)
            unk = F.max_pool2d(unk, kernel_size=rc * 2 + 1, stride=1, padding=rc)
        unk = F.max_pool2d(unk, kernel_size=r * 2 + 1, stride=1, padding=r)
        if close:
            unk = unk + ori
        cls = torch.where(unk > 0.5, torch.ones_like(a), 2.0 * (a > 0.5)).long()
        tris.append(F.one_hot(cls.squeeze(1), num_classes=3).permute(0, 3, 1, 2).float())
        alphas.append(a)
    return torch.stack(tris), torch.stack(alphas)
