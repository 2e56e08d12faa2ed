"""SparseMat's low-resolution prediction network (reference encoder ``lpn``).

A MobileNetV2 backbone on RGB + one mask at half resolution, and MODNet's high-resolution
branch decoding it to a fused matte (``p0x``) plus the OS16 features (``dec16x``) that
SparseMat's context gate reads.  Module names follow the reference (``backbone.model.features``,
``decoder.conv_dec16x`` ...), so its checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _resize_like(src: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
    return F.interpolate(src, size=tar.shape[-2:], mode="bilinear", align_corners=False)


class IBNorm(nn.Module):
    """Batch norm on the first half of the channels, instance norm on the rest (MODNet)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bnorm_channels = channels // 2
        self.inorm_channels = channels - self.bnorm_channels
        self.bnorm = nn.BatchNorm2d(self.bnorm_channels, affine=True)
        self.inorm = nn.InstanceNorm2d(self.inorm_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn_x = self.bnorm(x[:, :self.bnorm_channels].contiguous())
        # The reference slices from ``inorm_channels`` (equal to ``bnorm_channels`` for even widths).
        rest = x[:, self.inorm_channels:].contiguous()
        n, c, h, w = bn_x.shape
        if n == 1 and h == 1 and w == 1:
            in_x = self.inorm(rest.expand(2, c, h, w).contiguous())[:1]
        else:
            in_x = self.inorm(rest)
        return torch.cat((bn_x, in_x), 1)


class ConvIBNormRelu(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, padding: int = 0, ibn: bool = True, relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=padding, bias=True)]
        if ibn:
            layers.append(IBNorm(cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = round(cin * expansion)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion, channels, repeats, first stride) of MobileNetV2
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
STAGE_ENDS = (2, 4, 7, 14, 19)  # features[:2] -> OS2, [:4] -> OS4, [:7] -> OS8, [:14] -> OS16, [:19] -> OS32


class MobileNetV2Features(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False),
                                                 nn.BatchNorm2d(32), nn.ReLU6(inplace=True))]
        cin = 32
        for t, c, n, s in MOBILENET_V2:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280),
                                    nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)


class MobileNetV2Backbone(nn.Module):
    enc_channels = (16, 24, 32, 96, 1280)

    def __init__(self, in_channels: int):
        super().__init__()
        self.model = MobileNetV2Features(in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in STAGE_ENDS:
            for i in range(start, end):
                x = self.model.features[i](x)
            outs.append(x)
            start = end
        return outs


class SEBlock(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean((2, 3)))
        return x * w[:, :, None, None]


def _dec(cin: int, hr: int, n: int = 2) -> nn.Sequential:
    widths = [(cin, 2 * hr), (2 * hr, hr), (hr, hr)][:n] if n > 1 else [(cin, hr)]
    return nn.Sequential(*[ConvIBNormRelu(a, b, 3, padding=1) for a, b in widths])


def _pred(cin: int) -> ConvIBNormRelu:
    return ConvIBNormRelu(cin, 1, 1, ibn=False, relu=False)


class HLBranch(nn.Module):
    """MODNet's decoder: five upsampling stages, each predicting a matte fed to the next."""

    def __init__(self, in_channels: int, hr: int, enc: tuple[int, ...]):
        super().__init__()
        self.se_block = SEBlock(enc[4], 4)
        self.p32x = _pred(enc[4])
        self.conv_dec16x = _dec(enc[4] + enc[3], hr)
        self.p16x = _pred(hr + 1)
        self.conv_dec8x = _dec(hr + enc[2], hr)
        self.p8x = _pred(hr + 1)
        self.conv_dec4x = _dec(hr + enc[1], hr)
        self.p4x = _pred(hr)
        self.conv_dec2x = _dec(hr + enc[0], hr, n=3)
        self.p2x = _pred(hr + 1)
        self.conv_dec1x = _dec(hr + in_channels, hr, n=1)
        self.p1x = _pred(hr + 1)
        self.p0x = _pred(2)

    def forward(self, img: torch.Tensor, enc: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(fused matte logits at the input size, OS16 features)."""
        enc2x, enc4x, enc8x, enc16x, enc32x = enc
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        enc32x = self.se_block(enc32x)
        p32x = _resize_like(self.p32x(enc32x), img)
        dec16x = self.conv_dec16x(torch.cat((up(enc32x), enc16x), 1))
        p16x = _resize_like(self.p16x(torch.cat((dec16x, _resize_like(p32x, dec16x)), 1)), img)
        dec8x = self.conv_dec8x(torch.cat((up(dec16x), enc8x), 1))
        p8x = _resize_like(self.p8x(torch.cat((dec8x, _resize_like(p16x, dec8x)), 1)), img)
        dec4x = self.conv_dec4x(torch.cat((up(dec8x), enc4x), 1))
        p4x = _resize_like(self.p4x(dec4x), img)
        dec2x = self.conv_dec2x(torch.cat((up(dec4x), enc2x), 1))
        p2x = _resize_like(self.p2x(torch.cat((dec2x, _resize_like(p4x, dec2x)), 1)), img)
        dec1x = self.conv_dec1x(torch.cat((up(dec2x), img), 1))
        p1x = self.p1x(torch.cat((dec1x, _resize_like(p2x, dec1x)), 1))
        p0x = self.p0x(torch.cat((p1x, _resize_like(p8x, p1x)), 1))
        return p0x, dec16x


class LPN(nn.Module):
    def __init__(self, in_channels: int = 4, mid_channels: int = 32):
        super().__init__()
        self.backbone = MobileNetV2Backbone(in_channels)
        self.decoder = HLBranch(in_channels, mid_channels, MobileNetV2Backbone.enc_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB + mask ``[B, 4, h, w]`` (h, w multiples of 32) -> (matte ``[B, 1, h, w]``, context features)."""
        logits, ctx = self.decoder(x, self.backbone(x))
        return torch.sigmoid(logits), ctx
