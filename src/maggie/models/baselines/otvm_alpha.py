"""OTVM's alpha network: FBA Matting (Forte & Pitie 2020) with OTVM's refinement head, key layout
``NET.*`` (``models/alpha/FBA/models.py``), and its input encoding.

Input: ImageNet-normalised RGB, six Gaussian "click" maps of the distance to the arg-max
background / foreground of the (propagated) trimap, and the trimap's soft bg / fg probabilities.
The click maps need a Euclidean distance transform, which the authors take from OpenCV
(``cv2.distanceTransform(DIST_L2, DIST_MASK_PRECISE)``); here it is an exact integer computation in
torch (equal to OpenCV with IPP off).  It is not differentiable, nor is it in the authors' code:
gradients reach the trimap only through the soft bg / fg channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from maggie.models.baselines.otvm_backbones import BasicBlock, FBAEncoder, WSConv2d

CLICK_L = 320  # FBA's reference length for the Gaussian click encodings
CLICK_SCALES = (0.02, 0.08, 0.16)


def _squared_distance_to(target: Tensor, max_elems: int = 1 << 24) -> Tensor:
    """Exact squared Euclidean distance ``[N, H, W]`` (int64) from every pixel to the nearest True
    pixel of ``target`` (bool ``[N, H, W]``), which OpenCV's ``distanceTransform(DIST_L2,
    DIST_MASK_PRECISE)`` computes in the authors' code.  Images without any True pixel get a large
    finite value.

    Two separable passes: the 1-D distance along the longer axis by cumulative max/min scans, then
    a brute-force minimum over the shorter axis of ``dx**2 + g**2`` (int32, chunked), so the cost is
    ``H*W*min(H, W)`` but everything stays exact integer arithmetic."""
    n, h, w = target.shape
    transpose = h < w  # brute-force over the shorter axis: make it the last one
    t = target.transpose(1, 2) if transpose else target
    _, a, b = t.shape  # a: long axis (scan), b: short axis (brute force)
    big = a + b + 1
    idx = torch.arange(a, device=t.device, dtype=torch.int32).view(1, a, 1)
    prev = torch.where(t, idx, torch.full_like(idx, -big)).cummax(dim=1).values
    nxt = torch.where(t, idx, torch.full_like(idx, a + big)).flip(1).cummin(dim=1).values.flip(1)
    g = torch.minimum(idx - prev, nxt - idx)
    g2 = g * g  # [n, a, b]
    pos = torch.arange(b, device=t.device, dtype=torch.int32)
    dx2 = (pos.view(b, 1) - pos.view(1, b)) ** 2  # [b (out), b (source)]
    out = torch.empty((n, a, b), dtype=torch.int32, device=t.device)
    rows = max(1, max_elems // (b * b))
    for i in range(0, a, rows):
        blk = g2[:, i : i + rows]  # [n, r, b]
        out[:, i : i + rows] = (blk.unsqueeze(2) + dx2.view(1, 1, b, b)).amin(dim=3)
    out = out.long()
    return out.transpose(1, 2) if transpose else out


def click_maps(two_class: Tensor) -> Tensor:
    """FBA's six Gaussian distance encodings ``[N, 6, H, W]`` of a hard (bg, fg) map ``[N, 2, H, W]``
    (``utils.utils.trimap_transform``): for each class, exp(-d^2 / (2 (s L)^2)) with d the distance
    to the nearest pixel of that class, s in (0.02, 0.08, 0.16), L = 320.  A class absent from a
    sample gives zeros (the authors test presence over the whole batch; at batch size 1, as in
    their evaluation, this is the same)."""
    n, _, h, w = two_class.shape
    out = torch.zeros((n, 6, h, w), device=two_class.device, dtype=torch.float32)
    for k in range(2):
        tk = two_class[:, k] != 0
        present = tk.flatten(1).any(dim=1)
        if not bool(present.any()):
            continue
        sel = present.nonzero().flatten()
        d2 = _squared_distance_to(tk[sel])
        # OpenCV returns the correctly rounded float32 sqrt(d^2) and the authors square it again: keep
        # that rounding.  torch's float32 sqrt on CPU (SIMD) can be 1 ulp off, float64 then cast is not.
        dist = torch.sqrt(d2.double()).float()
        neg = -(dist**2)
        for j, s in enumerate(CLICK_SCALES):
            out[sel, 3 * k + j] = torch.exp(neg / (2 * ((s * CLICK_L) ** 2)))
    return out


def trimap_features(trimap3: Tensor) -> Tensor:
    """The alpha network's 8 trimap channels from a 3-channel trimap or trimap probability map
    ``[N, 3, H, W]`` (bg, unknown, fg) (``FullModel.make_trimap`` with TRIMAP_CHANNEL = 8): six click
    maps of the arg-max bg/fg regions, then the soft bg and fg channels themselves."""
    tri = trimap3.float()
    cls = tri.max(dim=1)[1].unsqueeze(1).float() * 0.5
    hard = torch.cat([(cls == 0).float(), (cls == 1).float()], dim=1)
    soft = torch.stack([tri[:, 0], tri[:, 2]], dim=1)
    return torch.cat([click_maps(hard), soft], dim=1).float()


def fba_fusion(alpha: Tensor, img: Tensor, fg: Tensor, bg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """FBA's closed-form one-step refinement of (alpha, F, B) towards the compositing equation
    (note B is updated with the already-updated, unclamped F, as in FBA)."""
    fg = alpha * img + (1 - alpha**2) * fg - alpha * (1 - alpha) * bg
    bg = (1 - alpha) * img + (2 * alpha - alpha**2) * bg - alpha * (1 - alpha) * fg
    fg = torch.clamp(fg, 0, 1)
    bg = torch.clamp(bg, 0, 1)
    la = 0.1
    alpha = (alpha * la + torch.sum((img - bg) * (fg - bg), 1, keepdim=True)) / (
        torch.sum((fg - bg) * (fg - bg), 1, keepdim=True) + la
    )
    return torch.clamp(alpha, 0, 1), fg, bg


def _gn_block(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [WSConv2d(cin, cout, k, padding=k // 2, bias=True), nn.GroupNorm(32, cout), nn.LeakyReLU()]


class FBADecoder(nn.Module):
    """FBA's PPM + U-Net decoder; returns (16-ch hidden features, [alpha, F, B], 70-ch features)."""

    def __init__(self) -> None:
        super().__init__()
        self.ppm = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(s), *_gn_block(2048, 256, 1)) for s in (1, 2, 3, 6)]
        )
        self.conv_up1 = nn.Sequential(*_gn_block(2048 + 4 * 256, 256, 3), *_gn_block(256, 256, 3))
        self.conv_up2 = nn.Sequential(*_gn_block(256 + 256, 256, 3))
        self.conv_up3 = nn.Sequential(*_gn_block(256 + 64, 64, 3))
        self.conv_up4 = nn.Sequential(
            nn.Conv2d(64 + 3 + 3 + 2, 32, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(32, 16, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(16, 7, 1),
        )

    def forward(self, feats: list[Tensor], img: Tensor, two_chan: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c5 = feats[-1]
        size = c5.shape[-2:]
        pooled = [F.interpolate(p(c5), size, mode="bilinear", align_corners=False) for p in self.ppm]
        x = self.conv_up1(torch.cat([c5, *pooled], 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv_up2(torch.cat((x, feats[-4]), 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv_up3(torch.cat((x, feats[-5]), 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.cat((x, feats[-6][:, :3], img), 1)
        hid = self.conv_up4[:-1](torch.cat((x, two_chan), 1))
        out = self.conv_up4[-1](hid)
        alpha, fg, bg = fba_fusion(torch.clamp(out[:, 0:1], 0, 1), img, torch.sigmoid(out[:, 1:4]),
                                   torch.sigmoid(out[:, 4:7]))
        return hid, torch.cat((alpha, fg, bg), 1), x


class RefinementModule(nn.Module):
    """OTVM's full-resolution head on the decoder features: a refined [alpha, F, B] and 3-class
    trimap logits; its 16-ch hidden features go to the trimap memory."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_gn_block(64 + 3 + 3 + 2 + 1, 64, 3))
        self.layer1 = BasicBlock(64)
        self.layer2 = BasicBlock(64)
        self.pred = nn.Sequential(
            nn.Conv2d(64, 32, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(32, 16, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(16, 10, 1),
        )

    def forward(self, x: Tensor, img: Tensor, two_chan: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.conv1(torch.cat((x, two_chan, alpha), 1))
        x = self.layer2(self.layer1(x))
        hid = self.pred[:-1](x)
        out = self.pred[-1](hid)
        a, fg, bg = fba_fusion(torch.clamp(out[:, 0:1], 0, 1), img, torch.sigmoid(out[:, 1:4]),
                               torch.sigmoid(out[:, 4:7]))
        return hid, torch.cat((a, fg, bg), 1), out[:, -3:]


class MattingModule(nn.Module):
    """FBA encoder-decoder plus (stages 3-4) the refinement head (``models/alpha/FBA/models.py``)."""

    def __init__(self, refinement: bool) -> None:
        super().__init__()
        self.encoder = FBAEncoder(11)
        self.decoder = FBADecoder()
        self.refine = RefinementModule() if refinement else None

    def forward(self, x: Tensor, img: Tensor, two_chan: Tensor) -> dict[str, Tensor]:
        hid, out, x_dec = self.decoder(self.encoder(x), img, two_chan)
        res = {"fba": out, "hid": hid}
        if self.refine is not None:
            hid, ref, tri_logits = self.refine(x_dec, img, two_chan, out[:, :1])
            res.update(hid=hid, fba_refined=ref, trimap_logits=tri_logits)
        return res


