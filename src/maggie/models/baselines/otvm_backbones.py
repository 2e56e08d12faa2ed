"""The two ResNet-50 backbones of OTVM (github.com/Hongje/OTVM), with the authors' attribute names.

* :class:`STMEncoder`: torchvision's ResNet-50 (v1.5, BatchNorm) up to ``layer3``, as STM's
  ``Encoder_Q`` / ``Encoder_M`` wrap it (``layerN`` renamed ``res{N+1}``, ImageNet normalisation
  inside); the memory encoder adds 7x7 stems for the trimap, alpha and hidden-feature channels.
* :class:`FBAEncoder`: FBA Matting's ResNet-50 with weight-standardised convolutions and
  GroupNorm(32), dilated to output stride 8, on 11 input channels.

The key names match the authors' checkpoints, so ImageNet ResNet-50 weights in torchvision's
naming map onto ``STMEncoder`` directly (``layerN`` -> ``res{N+1}``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WSConv2d(nn.Conv2d):
    """Convolution with weight standardisation, as FBA's ``layers_WS.Conv2d``: per output filter,
    subtract the mean and divide by (sqrt(unbiased var + 1e-12) + 1e-5) at every call."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = w - w.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True).mean(dim=3, keepdim=True)
        scale = torch.sqrt(torch.var(w.view(w.size(0), -1), dim=1) + 1e-12).view(-1, 1, 1, 1) + 1e-5
        return F.conv2d(x, w / scale.expand_as(w), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _conv(ws: bool, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
          bias: bool = True) -> nn.Conv2d:
    cls = WSConv2d if ws else nn.Conv2d
    return cls(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias)


def _norm(ws: bool, c: int) -> nn.Module:
    """FBA pairs WS convs with GroupNorm(32); STM uses torchvision's BatchNorm."""
    return nn.GroupNorm(32, c) if ws else nn.BatchNorm2d(c)


class Bottleneck(nn.Module):
    """ResNet-50 v1.5 bottleneck (stride on the 3x3), torchvision's attribute names."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample: bool, ws: bool) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv(ws, cin, planes, 1, bias=False)
        self.bn1 = _norm(ws, planes)
        self.conv2 = _conv(ws, planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _norm(ws, planes)
        self.conv3 = _conv(ws, planes, cout, 1, bias=False)
        self.bn3 = _norm(ws, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(_conv(ws, cin, cout, 1, stride=stride, bias=False), _norm(ws, cout)) if downsample else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def resnet_stage(cin: int, planes: int, blocks: int, stride: int, dil_first: int, dil_rest: int,
                 ws: bool) -> nn.Sequential:
    """One ResNet stage.  FBA's dilated encoder (output stride 8) removes the strides of stages 3-4
    and dilates their 3x3 convs: (1, 2) in stage 3 and (2, 4) in stage 4 for (first, other) blocks."""
    mods = [Bottleneck(cin, planes, stride, dil_first, True, ws)]
    mods += [Bottleneck(planes * 4, planes, 1, dil_rest, False, ws) for _ in range(blocks - 1)]
    return nn.Sequential(*mods)


class BasicBlock(nn.Module):
    """ResNet basic block with WS convs and GroupNorm (FBA's ``resnet_GN_WS.BasicBlock``)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = WSConv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.GroupNorm(32, c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = WSConv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.GroupNorm(32, c)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class STMEncoder(nn.Module):
    """ResNet-50 up to layer3 (res4, stride 16) on RGB in 0..1 (STM's ``Encoder_Q`` / ``Encoder_M``).

    The memory encoder (``memory=True``) adds 7x7 stems for the unknown and foreground maps and,
    with ``hdim`` > 0 (stages 3-4), the alpha and the alpha network's ``hdim``-channel hidden
    features; their sum joins ``conv1``'s output before ``bn1``."""

    def __init__(self, memory: bool, hdim: int = -1) -> None:
        super().__init__()
        self.memory = memory
        self.hdim = hdim
        if memory:
            self.conv1_m = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
            self.conv1_o = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
            if hdim > 0:
                self.conv1_a = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
                self.conv1_h = nn.Conv2d(hdim, 64, 7, stride=2, padding=3, bias=False)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res2 = resnet_stage(64, 64, 3, 1, 1, 1, ws=False)
        self.res3 = resnet_stage(256, 128, 4, 2, 1, 1, ws=False)
        self.res4 = resnet_stage(512, 256, 6, 2, 1, 1, ws=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, img: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``img`` RGB 0..1; ``extra`` (memory encoder only) = [unknown, fg(, alpha, hid...)] channels.
        Returns r4 (1/16, 1024 ch), r3 (1/8, 512), r2 (1/4, 256)."""
        f = (img - self.mean) / self.std
        x = self.conv1(f)
        if self.memory:
            assert extra is not None
            s = self.conv1_m(extra[:, 0:1]) + self.conv1_o(extra[:, 1:2])
            if self.hdim > 0:
                s = s + self.conv1_a(extra[:, 2:3]) + self.conv1_h(extra[:, 3:])
            x = x + s
        c1 = self.relu(self.bn1(x))
        r2 = self.res2(self.maxpool(c1))
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        return r4, r3, r2


class FBAEncoder(nn.Module):
    """ResNet-50 with WS convs + GroupNorm, dilated to output stride 8, 11 input channels
    (normalised RGB, 6 click maps, soft bg/fg).  Returns the input and every stage's output."""

    def __init__(self, in_ch: int = 11) -> None:
        super().__init__()
        self.conv1 = WSConv2d(in_ch, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.GroupNorm(32, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = resnet_stage(64, 64, 3, 1, 1, 1, ws=True)
        self.layer2 = resnet_stage(256, 128, 4, 2, 1, 1, ws=True)
        self.layer3 = resnet_stage(512, 256, 6, 1, 1, 2, ws=True)
        self.layer4 = resnet_stage(1024, 512, 3, 1, 2, 4, ws=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        outs.append(x)
        x = self.layer1(self.maxpool(x))
        outs.append(x)
        for layer in (self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs
