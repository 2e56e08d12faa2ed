"""MGM + TCVOM baselines (reference archs ``TCVOM_SingInst`` / ``TCVOM`` with decoder ``res_shortcut_fam_22``).

TCVOM adds temporal feature alignment to MGM for video: every frame of a clip is decoded once;
then each middle frame is decoded again with its OS8 features refined by a feature aggregation
module (FAM) that attends, inside a 9x9 window, to the OS8 features of the previous and next
frames, but only where the first pass is uncertain (``0.01 < alpha_os1 < 0.99``, dilated by a 15x15
max-pool, any instance).  The clip's end frames keep their first-pass mattes.

* ``mgm_tcvom``: single-instance MGM, run once per instance.
* ``mgm_stacked_tcvom``: MGM* (10 stacked masks), one pass for all instances.

Reference quirks kept for checkpoint compatibility: the attention sums the *keys* (there is no
separate value path to the neighbours), and outside the uncertain region the refined features are
the value projection of the frame's own features, not the features themselves.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.baselines.mgm import MGM, MGMDecoder, progressive_fuse

TCVOM_ARCHS = ("mgm_tcvom", "mgm_stacked_tcvom")


class FeatureAggregation(nn.Module):
    """Windowed attention from a frame's OS8 features to its two neighbours', inside a mask."""

    def __init__(self, channels: int = 128, window: int = 9):
        super().__init__()
        self.key_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.query_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.value_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.window = window

    def _attend(self, q: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(aggregated features [B, C, h, w], attention logits [B, window^2, h*w], zero outside ``mask``)."""
        b, c, h, w = q.shape
        k = F.unfold(self.key_conv(target), self.window, padding=self.window // 2).reshape(b, c, -1, h * w)
        logits = (q.reshape(b, c, 1, h * w) * k).sum(1) / math.sqrt(c)  # [B, window^2, N]
        keep = mask.reshape(b, 1, h * w)
        logits = logits * keep
        att = torch.softmax(logits, dim=1)
        feats = (att.unsqueeze(1) * k).sum(2) * keep  # the keys double as values (reference quirk)
        return feats.reshape(b, c, h, w), logits

    def forward(self, x: torch.Tensor, prev: torch.Tensor, nxt: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x, prev, nxt ``[B, C, h, w]``; mask ``[B, 1, H, W]``
        -> (features, logits to prev, logits to next, mask at h x w)."""
        mask = F.interpolate(mask, size=x.shape[-2:], mode="nearest") > 0
        q = self.query_conv(x)
        from_prev, att_prev = self._attend(q, prev, mask)
        from_next, att_next = self._attend(q, nxt, mask)
        return self.value_conv(x) + from_prev + from_next, att_prev, att_next, mask


class TCVOMDecoder(MGMDecoder):
    """``res_shortcut_fam_22``: the MGM decoder with a FAM on the OS8 features; its first two
    stages' batch norms stay in eval mode during training, as in the reference."""

    def __init__(self, out_channels: int):
        super().__init__(out_channels)
        self.fam = FeatureAggregation(128, 9)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            self.layer1.train(False)
            self.layer2.train(False)
        return self

    def forward(self, x: torch.Tensor, shortcuts: tuple[torch.Tensor, ...], neighbours=None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple | None]:
        """neighbours: (prev features, next features, uncertainty mask) for the second pass."""
        fea1, fea2, fea3, fea4, fea5 = shortcuts
        x = self.layer2(self.layer1(x) + fea5) + fea4
        features, attention = x, None
        if neighbours is not None:
            x, att_prev, att_next, small = self.fam(x, *neighbours)
            attention = (att_prev, att_next, small)
        return self.heads(x, fea1, fea2, fea3), features, attention


class TCVOM(MGM):
    archs = TCVOM_ARCHS
    decoder_cls = TCVOMDecoder
    is_video = True

    def group_pass(self, image: torch.Tensor, mask: torch.Tensor, state=None) -> dict[str, torch.Tensor]:
        """The clip pass: image ``[B, T, 3, H, W]``, mask ``[B, T, slots, H, W]`` -> outputs ``[B, T, slots, H, W]``;
        in training with ``state.gt_alpha`` also TCVOM's ``loss_atten``."""
        b, t, _, h, w = image.shape
        feats, mid = self.encoder(image.flatten(0, 1), mask.flatten(0, 1))
        feats = self.aspp(feats)
        first, features, _ = self.decoder(feats, mid["shortcut"])
        split = lambda x: x.reshape(b, t, *x.shape[1:])  # noqa: E731
        feats, features = split(feats), split(features)
        shortcuts = [split(s) for s in mid["shortcut"]]
        uncertain = ((first["alpha_os1"] > 0.01) & (first["alpha_os1"] < 0.99)).float()
        uncertain = F.max_pool2d(uncertain, 15, stride=1, padding=7)
        uncertain = split(uncertain).amax(2, keepdim=True)  # [B, T, 1, H, W], any instance
        first = {k: split(v) for k, v in first.items()}
        frames, attention = [{k: v[:, 0] for k, v in first.items()}], []
        for i in range(1, t - 1):
            out, _, att = self.decoder(feats[:, i], tuple(s[:, i] for s in shortcuts),
                                       (features[:, i - 1], features[:, i + 1], uncertain[:, i]))
            frames.append(out)
            attention.append(att)
        if t > 1:
            frames.append({k: v[:, -1] for k, v in first.items()})
        preds = {k: torch.stack([f[k] for f in frames], 1) for k in first}
        flat = {k: v.flatten(0, 1) for k, v in preds.items()}
        alpha, w4, w1 = progressive_fuse(flat, train=self.training)
        preds["alpha"] = split(alpha)
        if self.training:
            preds.update(weight_os4=split(w4), weight_os1=split(w1))
            if state is not None and getattr(state, "gt_alpha", None) is not None:
                preds["loss_atten"] = attention_loss(state.gt_alpha.reshape(b, t, -1, h, w), attention)
        return preds


def attention_loss(alphas: torch.Tensor, attention: list, window: int = 9) -> torch.Tensor:
    """TCVOM's supervision of the FAM attention: BCE between each window logit and 0.8 where the
    neighbour's OS8-pooled alpha (max over instances) differs from the frame's by less than 0.3."""
    if not attention:
        return alphas.new_zeros(())
    merged = alphas.amax(2, keepdim=True)  # [B, T, 1, H, W]
    b = merged.shape[0]
    losses = []
    for c, (att_prev, att_next, small) in enumerate(attention, start=1):
        pooled = [F.avg_pool2d(merged[:, k], 8, 8) for k in (c - 1, c, c + 1)]
        h8, w8 = pooled[1].shape[-2:]
        m = small.reshape(b, h8 * w8)
        if not m.any():
            losses.append(alphas.new_zeros(()))
            continue
        centre = pooled[1].reshape(b, 1, h8 * w8)
        total = alphas.new_zeros(())
        for logits, neighbour in ((att_prev, pooled[0]), (att_next, pooled[2])):
            with torch.no_grad():
                unfold = F.unfold(neighbour, window, padding=window // 2).reshape(b, -1, h8 * w8)
                target = ((centre - unfold).abs() < 0.3).float() * 0.8
            sel = m.unsqueeze(1).expand_as(logits)
            total = total + F.binary_cross_entropy_with_logits(logits[sel], target[sel])
        losses.append(total / 2.0)
    return torch.stack(losses).mean()
