"""FTP-VM's building blocks (the authors' ``FTPVM/basic_block.py``, ``cbam.py``, ``module.py``, ``decoder.py``):
gated trimap fusion, memory read, GRU decoders, output fusion, padding and the fast guided filter.

Parameter names follow the authors' state dict; ``ftpvm.FTPVM`` assembles them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Rec = list[Tensor | None]

def _per_frame(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply a 4-D op to ``[B, T, C, H, W]`` frame by frame (folded into the batch), as the authors do."""
    return fn(x.flatten(0, 1)).unflatten(0, x.shape[:2])


# ----------------------------------------------------------------------------------------------
# Building blocks (FTPVM/basic_block.py, cbam.py, module.py)
# ----------------------------------------------------------------------------------------------


class Projection(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return _per_frame(self.conv, x)


class GatedConv2d(nn.Module):
    """Conv to 2C channels, LeakyReLU(0.1) on the first half gated by the sigmoid of the second."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 2, k, stride, padding)
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        f, m = self.conv(x).split(self.cout, dim=1)
        return F.leaky_relu(f, 0.1) * torch.sigmoid(m)


class ResBlock(nn.Module):
    """Pre-activation residual block; a 3x3 conv ``skip`` when the width changes."""

    def __init__(self, cin: int, cout: int | None = None) -> None:
        super().__init__()
        cout = cin if cout is None else cout
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        return self.skip(x) + r


def avg_pyramid(x: Tensor, num: int) -> list[Tensor]:
    """Repeated 2x2 average pooling (ceil mode, no padded zeros counted): strides 2, 4, ..., 2**num."""
    out, y = [], x.flatten(0, 1)
    for _ in range(num):
        y = F.avg_pool2d(y, 2, 2, ceil_mode=True, count_include_pad=False)
        out.append(y.unflatten(0, x.shape[:2]))
    return out


class ConvGRU(nn.Module):
    """Convolutional GRU run frame by frame over ``[B, T, C, H, W]``; zero initial state."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        if h is None:
            h = x.new_zeros(x.size(0), *x.shape[-3:])
        outs = []
        for xt in x.unbind(dim=1):
            r, z = self.ih(torch.cat([xt, h], dim=1)).split(self.channels, dim=1)
            c = self.hh(torch.cat([xt, r * h], dim=1))
            h = (1 - z) * h + z * c
            outs.append(h)
        return torch.stack(outs, dim=1), h


class GRUBottleneckBlock(nn.Module):
    """Second half of the channels goes through a ConvGRU (RVM-style)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = x.split(self.channels // 2, dim=2)
        b, r = self.gru(b, r)
        return torch.cat([a, b], dim=2), r


class GRUUpsamplingBlock(nn.Module):
    """x2 bilinear upsample, concat skip feature and image, conv-BN-ReLU, half the channels through a GRU."""

    def __init__(self, cin: int, cskip: int, csrc: int, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin + cskip + csrc, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))
        self.gru = ConvGRU(cout // 2)

    def forward(self, x: Tensor, f: Tensor | None, s: Tensor, r: Tensor | None) -> tuple[Tensor, Tensor]:
        b, t, _, h, w = s.shape
        x = F.interpolate(x.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)[:, :, :h, :w]
        parts = [x] + ([] if f is None else [f.flatten(0, 1)]) + [s.flatten(0, 1)]
        x = self.conv(torch.cat(parts, dim=1)).unflatten(0, (b, t))
        a, c = x.split(self.cout // 2, dim=2)
        c, r = self.gru(c, r)
        return torch.cat([a, c], dim=2), r


class UpsampleBlock(nn.Module):
    """x2 bilinear upsample, concat the image, ResBlock (the authors' ``norm`` is an Identity here)."""

    def __init__(self, skip_c: int, up_c: int, out_c: int) -> None:
        super().__init__()
        self.out_conv = ResBlock(up_c + skip_c, out_c)

    def forward(self, up: Tensor, skip: Tensor) -> Tensor:
        b, t = up.shape[:2]
        u = F.interpolate(up.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)
        return self.out_conv(torch.cat([u, skip.flatten(0, 1)], dim=1)).unflatten(0, (b, t))


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # indices 1 and 3 as in the authors' Sequential(Flatten, Linear, ReLU, Linear)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: Tensor) -> Tensor:
        k = (x.size(2), x.size(3))
        att = self.mlp(F.avg_pool2d(x, k, stride=k)) + self.mlp(F.max_pool2d(x, k, stride=k))
        return x * torch.sigmoid(att)[:, :, None, None]


class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = BasicConv(2, 1, 7, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.max(1)[0].unsqueeze(1), x.mean(1).unsqueeze(1)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusion(nn.Module):
    """ResBlock then ``x + CBAM(x)``: fuses the query's 1/16 feature with the value read from memory."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = ResBlock(cin, cout)
        self.attention = CBAM(cout)

    def forward(self, x: Tensor) -> Tensor:
        def fn(y: Tensor) -> Tensor:
            y = self.block(y)
            return y + self.attention(y)

        return _per_frame(fn, x)


class PSP(nn.Module):
    """Pyramid pooling (bins 1, 2, 4, 8; align_corners=True upsampling) and a 1x1 bottleneck + ReLU."""

    def __init__(self, features: int, per_features: int, out_features: int, sizes: Sequence[int] = (1, 2, 4, 8)):
        super().__init__()
        self.sizes = tuple(sizes)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(features, per_features, 1, bias=False)) for s in sizes)
        self.bottleneck = nn.Conv2d(per_features * len(self.sizes) + features, out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        def fn(f: Tensor) -> Tensor:
            h, w = f.shape[-2:]
            priors = [F.interpolate(st(f), size=(h, w), mode="bilinear", align_corners=True) for st in self.stages]
            return F.relu(self.bottleneck(torch.cat(priors + [f], dim=1)))

        return _per_frame(fn, x)


class TrimapGatedFusion(nn.Module):
    """Encodes memory frames' backbone features with their trimap into memory values (stride 16).

    Replaces STM's second (value) encoder with gated convs over the shared backbone's features at
    strides 2-16, each level concatenated with the trimap average-pooled to that stride.
    """

    def __init__(self, ch_feats: Sequence[int], ch_mask: int = 1) -> None:
        super().__init__()
        layers = []
        for i, c in enumerate(ch_feats):
            cin = c + ch_mask + (ch_feats[i - 1] if i > 0 else 0)
            layers.append(nn.Sequential(
                GatedConv2d(cin, c, 3, 1, 1), nn.GroupNorm(4, c), nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2),
                nn.GroupNorm(4, c), nn.AvgPool2d((2, 2)) if i < len(ch_feats) - 1 else nn.Identity()))
        self.gated_convs = nn.ModuleList(layers)

    def forward(self, mask: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """``mask [B, T, 1, H, W]``, ``feats`` 4 x ``[B, T, C, h, w]`` -> value ``[B, C, T, H/16, W/16]``."""
        masks = avg_pyramid(mask, 4)
        bt = feats[0].shape[:2]
        f = self.gated_convs[0](torch.cat([feats[0], masks[0]], dim=2).flatten(0, 1))
        for i in range(1, 4):
            f = self.gated_convs[i](torch.cat([f, feats[i].flatten(0, 1), masks[i].flatten(0, 1)], dim=1))
        return f.unflatten(0, bt).transpose(1, 2)


class BottleneckFusion(nn.Module):
    """Space-time memory read at stride 16 (dot-product affinity, softmax over memory) + fusion + PSP."""

    def __init__(self, ch_in: int, ch_key: int, ch_value: int, ch_out: int) -> None:
        super().__init__()
        self.project_key = Projection(ch_in, ch_key)
        self.fuse = FeatureFusion(ch_in + ch_value, ch_out)
        self.bottleneck = PSP(ch_out, ch_out // 4, ch_out)

    def encode_key(self, feat16: Tensor) -> Tensor:
        return self.project_key(feat16).transpose(1, 2)  # [B, Ck, T, h, w]

    def read_value(self, f16_q: Tensor, f16_m: Tensor, value_m: Tensor) -> Tensor:
        qk, mk = self.encode_key(f16_q), self.encode_key(f16_m)
        b, ck = mk.shape[:2]
        affinity = mk.flatten(2).transpose(1, 2) @ qk.flatten(2) / math.sqrt(ck)  # [B, Nm, Nq]
        affinity = F.softmax(affinity, dim=1)
        cv, h, w = value_m.shape[1], value_m.shape[3], value_m.shape[4]
        val = torch.bmm(value_m.reshape(b, cv, -1), affinity)  # [B, Cv, Tq*h*w]
        return val.view(b, cv, -1, h, w).transpose(1, 2)

    def forward(self, f16_q: Tensor, f16_m: Tensor, value_m: Tensor) -> Tensor:
        read = self.read_value(f16_q, f16_m, value_m)
        return self.bottleneck(self.fuse(torch.cat([f16_q, read], dim=2)))


class SegmentationDecoderTo4x(nn.Module):
    """Trimap ("glance") decoder: 1/16 GRU -> 1/8 GRU -> 1/4 ResBlocks; returns its inner features too."""

    def __init__(self, feature_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        self.decode4 = GRUBottleneckBlock(feature_channels[3])
        self.decode3 = GRUUpsamplingBlock(feature_channels[3], feature_channels[2], 3, decoder_channels[0])
        self.decode2 = UpsampleBlock(3, decoder_channels[0], decoder_channels[1])
        self.out = ResBlock(decoder_channels[1], decoder_channels[2])

    def forward(self, img4: Tensor, img8: Tensor, f8: Tensor, f16: Tensor, r8: Tensor | None,
                r16: Tensor | None) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        x16, r16 = self.decode4(f16, r16)
        x8, r8 = self.decode3(x16, f8, img8, r8)
        x4 = self.decode2(x8, img4)
        return _per_frame(self.out, x4), r8, r16, [x4, x8, x16]


def _conv_relu_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(True), nn.BatchNorm2d(cout))


class MattingDecoderFrom4x(nn.Module):
    """Boundary ("focus") matte decoder from stride 4 to 1, fed with the trimap decoder's features."""

    def __init__(self, feature_channels: Sequence[int], ch_skips: Sequence[int], ch_decode: Sequence[int]) -> None:
        super().__init__()
        self.gated_s16 = _conv_relu_bn(ch_skips[0], ch_decode[0] // 2)
        self.gated_s4 = _conv_relu_bn(ch_skips[2], ch_decode[0] // 2)
        self.decode0 = ResBlock(ch_decode[0] + 3, ch_decode[0])
        self.decode0_1 = ResBlock(feature_channels[1] + ch_decode[0], ch_decode[0])
        self.decode1 = GRUUpsamplingBlock(ch_decode[0], feature_channels[0], 3, ch_decode[1])
        self.decode2 = GRUUpsamplingBlock(ch_decode[1], 0, 3, ch_decode[2])
        self.out = ResBlock(ch_decode[2], ch_decode[3])

    def forward(self, img1: Tensor, img2: Tensor, img4: Tensor, f2: Tensor, f4: Tensor, s4: Tensor, s16: Tensor,
                r1: Tensor | None, r2: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        bt = img1.shape[:2]
        s16 = F.interpolate(self.gated_s16(s16.flatten(0, 1)), scale_factor=(4, 4))  # nearest, as the authors
        s4 = self.gated_s4(s4.flatten(0, 1))
        x4 = self.decode0(torch.cat([s4, s16, img4.flatten(0, 1)], dim=1))
        x4 = self.decode0_1(torch.cat([f4.flatten(0, 1), x4], dim=1)).unflatten(0, bt)
        x2, r2 = self.decode1(x4, f2, img2, r2)
        x1, r1 = self.decode2(x2, None, img1, r1)
        return _per_frame(self.out, x1), r1, r2


# ----------------------------------------------------------------------------------------------
# Output fusion, padding, fast guided filter
# ----------------------------------------------------------------------------------------------


def seg_classes(logits: Tensor) -> Tensor:
    """Arg-max class of the trimap logits ``[B, T, 3, H, W]`` (0 bg, 1 unknown, 2 fg), as the authors take it."""
    return torch.sigmoid(logits).max(dim=2, keepdim=True)[1]


def seg_to_trimap(logits: Tensor) -> Tensor:
    """Trimap logits -> 0 / 0.5 / 1 map, the authors' ``seg_to_trimap``."""
    idx = seg_classes(logits)
    return (idx == 1) * 0.5 + (idx == 2)


def collaborate_fuse(logits: Tensor, boundary: Tensor) -> Tensor:
    """Final alpha: the boundary matte inside the predicted unknown region, 1 in foreground, 0 elsewhere."""
    idx = seg_classes(logits)
    return boundary * (idx == 1) + (idx == 2)


def collaborate_fuse_trimap(trimap: Tensor, boundary: Tensor) -> Tensor:
    """Same with a given trimap (the authors' ``replace_given_seg`` for memory frames that are also queries)."""
    fg = trimap > (1 - 1e-2)
    unknown = (~fg) & (trimap > 1e-2)
    return boundary * unknown + fg


def pad_divide_by(x: Tensor, d: int = 16) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two dims to multiples of ``d``, centred (extra pixel at the end), as the authors."""
    h, w = x.shape[-2:]
    nh, nw = -(-h // d) * d, -(-w // d) * d
    lh, lw = (nh - h) // 2, (nw - w) // 2
    pad = (lw, nw - w - lw, lh, nh - h - lh)
    return F.pad(x, pad), pad


def unpad(x: Tensor, pad: Sequence[int]) -> Tensor:
    h, w = x.shape[-2:]
    return x[..., pad[2]:h - pad[3], pad[0]:w - pad[1]]


def _box_filter(x: Tensor, r: int) -> Tensor:
    k = 2 * r + 1
    c = x.shape[1]
    kx = torch.full((c, 1, 1, k), 1 / k, device=x.device, dtype=x.dtype)
    ky = torch.full((c, 1, k, 1), 1 / k, device=x.device, dtype=x.dtype)
    return F.conv2d(F.conv2d(x, kx, padding=(0, r), groups=c), ky, padding=(r, 0), groups=c)


def fast_guided_filter(lr_x: Tensor, lr_y: Tensor, hr_x: Tensor, r: int = 1, eps: float = 1e-5) -> Tensor:
    """RVM's fast guided filter (box radius 1): upsample the low-res matte guided by the grey image."""
    mean_x, mean_y = _box_filter(lr_x, r), _box_filter(lr_y, r)
    cov_xy = _box_filter(lr_x * lr_y, r) - mean_x * mean_y
    var_x = _box_filter(lr_x * lr_x, r) - mean_x * mean_x
    a = cov_xy / (var_x + eps)
    b = mean_y - a * mean_x
    size = hr_x.shape[2:]
    a = F.interpolate(a, size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size, mode="bilinear", align_corners=False)
    return a * hr_x + b


def downsample_padded(x: Tensor, ratio: float) -> Tensor:
    """The authors' ``_interpolate``: bilinear resize by ``ratio``, then centred zero padding to 16."""
    y = F.interpolate(x.flatten(0, 1), scale_factor=ratio, mode="bilinear", align_corners=False,
                      recompute_scale_factor=False)
    return pad_divide_by(y, 16)[0].unflatten(0, x.shape[:2])


def take_rows(xs: list[Tensor], rows: Tensor | None) -> list[Tensor]:
    """Pick the clips of ``rows`` (batch indices, repeats allowed) from every tensor; all of them if None."""
    return list(xs) if rows is None else [x.index_select(0, rows) for x in xs]


