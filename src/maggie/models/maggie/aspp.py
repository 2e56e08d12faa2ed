"""Atrous spatial pyramid pooling on the OS32 features (DeepLabv3 style, as in the reference)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.ops.spectral_norm import conv_bn, is_channels_last


class ASPP(nn.Module):
    def __init__(self, in_channels: int = 512, out_channels: int = 512, mid_channels: int = 256):
        super().__init__()
        self.aspp1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.aspp2 = nn.Conv2d(in_channels, mid_channels, 3, padding=2, dilation=2, bias=False)
        self.aspp3 = nn.Conv2d(in_channels, mid_channels, 3, padding=4, dilation=4, bias=False)
        self.aspp4 = nn.Conv2d(in_channels, mid_channels, 3, padding=8, dilation=8, bias=False)
        self.aspp5 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        for i in range(1, 6):
            setattr(self, f"aspp{i}_bn", nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Conv2d(mid_channels * 5, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = []
        for i in range(1, 5):
            conv, bn = getattr(self, f"aspp{i}"), getattr(self, f"aspp{i}_bn")
            branches.append(F.relu(conv_bn(conv, bn, x)))
        pooled = F.relu(conv_bn(self.aspp5, self.aspp5_bn, F.adaptive_avg_pool2d(x, 1)))
        pooled = F.interpolate(pooled, size=x.shape[-2:], mode="nearest")
        # In the branches' layout: a channels-first part would make the concatenation, and the decoder, channels-first.
        branches.append(pooled.contiguous(memory_format=torch.channels_last) if is_channels_last(x) else pooled)
        return F.relu(conv_bn(self.conv2, self.bn2, torch.cat(branches, dim=1)))
