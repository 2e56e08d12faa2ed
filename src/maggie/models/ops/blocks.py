"""Dense decoder trunk of MGM/MaGGIe: upsampling residual blocks with LeakyReLU(0.2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.ops.spectral_norm import SNConvTranspose2d, conv_bn, sn_conv1x1, sn_conv3x3


class DecoderBlock(nn.Module):
    """Residual block; with ``stride == 2`` it upsamples by a transposed conv (and the shortcut by nearest)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None):
        super().__init__()
        if stride > 1:
            self.conv1 = SNConvTranspose2d(inplanes, inplanes, 4, stride=2, padding=1)
        else:
            self.conv1 = sn_conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv2 = sn_conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        nn.init.zeros_(self.bn2.weight)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(conv_bn(self.conv1, self.bn1, x), 0.2, inplace=True)
        out = conv_bn(self.conv2, self.bn2, out)
        identity = x
        if self.upsample is not None:  # [nearest upsampling,] 1x1 convolution, batch norm
            *resize, conv, bn = self.upsample
            identity = conv_bn(conv, bn, resize[0](x) if resize else x)
        return F.leaky_relu(out.add_(identity), 0.2, inplace=True)


def make_decoder_layer(inplanes: int, planes: int, blocks: int, stride: int = 2) -> nn.Sequential:
    """One decoder stage: the first block changes resolution/width, the rest keep it."""
    upsample = None
    if stride != 1:
        upsample = nn.Sequential(nn.UpsamplingNearest2d(scale_factor=2), sn_conv1x1(inplanes, planes),
                                 nn.BatchNorm2d(planes))
    elif inplanes != planes:
        upsample = nn.Sequential(sn_conv1x1(inplanes, planes), nn.BatchNorm2d(planes))
    layers = [DecoderBlock(inplanes, planes, stride, upsample)]
    layers += [DecoderBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def head(in_channels: int, out_channels: int, mid_channels: int = 32) -> nn.Sequential:
    """conv3x3 -> BN -> LeakyReLU -> conv3x3: the MGM prediction heads."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid_channels),
        nn.LeakyReLU(0.2),
        nn.Conv2d(mid_channels, out_channels, 3, padding=1),
    )


def to_alpha(logits: torch.Tensor) -> torch.Tensor:
    """The reference's output squashing: (tanh + 1) / 2."""
    return (torch.tanh(logits) + 1.0) / 2.0


def to_alpha_(logits: torch.Tensor) -> torch.Tensor:
    """``to_alpha`` in place, for a fresh full-resolution map, as ``sigmoid(2 x)`` (the same function): torch's CPU
    ``tanh`` is about 5x slower than its ``sigmoid``, and with ten people at 576 x 1024 the squashing plus two copies
    took 28 ms of a forward, now 3.  Values within 1.2e-7 of the reference's; where its ``tanh`` rounds to -1
    (logits below -9) this gives tiny positive mattes (< 1.6e-8) instead of exact zeros."""
    return logits.mul_(2.0).sigmoid_()


def xavier_init(*modules: nn.Module) -> None:
    """The reference's initialisation of ASPP and decoder (spectral-norm weights keep theirs)."""
    for module in modules:
        for name, p in module.named_parameters():
            if p.dim() > 1 and "weight_bar" not in name:
                nn.init.xavier_uniform_(p)
