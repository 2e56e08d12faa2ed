"""FTP-VM's encoder: timm's ``mobilenetv3_large_100`` feature extractor with timm's parameter names.

The authors build it with ``timm.create_model("mobilenetv3_large_100", features_only=True,
out_indices=(0, 1, 2, 3))`` (timm 0.4.12, class ``MobileNetV3Features``) under ``Backbone.backbone``,
so their state-dict keys read ``backbone.backbone.conv_stem.weight``, ``backbone.backbone.blocks.3.1.bn2.
running_var``, ...  This rebuild keeps those names and needs no timm.  Input is RGB in 0..1 (FTP-VM never
mean/std-normalises).  Features are taken after blocks 0, 1, 2 and 4: strides 2/4/8/16 with 16, 24, 40
and 112 channels.

Blocks 5 and 6 (stride 32) exist so that the checkpoint loads strictly.  timm runs them and throws their
output away; here they are skipped (same outputs and gradients, less work) unless ``run_unused`` is set,
which only matters for their BatchNorm running statistics in train mode (never used for an output).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# (in, mid, out, kernel, stride, se channels or 0, hard-swish?) per inverted-residual block, per stage.
_MBV3_STAGES: list[list[tuple[int, int, int, int, int, int, bool]]] = [
    [(16, 16, 16, 3, 1, 0, False)],  # depthwise-separable block (no expansion conv)
    [(16, 64, 24, 3, 2, 0, False), (24, 72, 24, 3, 1, 0, False)],
    [(24, 72, 40, 5, 2, 24, False), (40, 120, 40, 5, 1, 32, False), (40, 120, 40, 5, 1, 32, False)],
    [(40, 240, 80, 3, 2, 0, True), (80, 200, 80, 3, 1, 0, True), (80, 184, 80, 3, 1, 0, True),
     (80, 184, 80, 3, 1, 0, True)],
    [(80, 480, 112, 3, 1, 120, True), (112, 672, 112, 3, 1, 168, True)],
    [(112, 672, 160, 5, 2, 168, True), (160, 960, 160, 5, 1, 240, True), (160, 960, 160, 5, 1, 240, True)],
]
_FEATURE_BLOCKS = (0, 1, 2, 4)


def _act(x: Tensor, hard_swish: bool) -> Tensor:
    return F.hardswish(x) if hard_swish else F.relu(x)


class SqueezeExcite(nn.Module):
    """timm's SE: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.conv_expand(F.relu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(s)


class DepthwiseSeparableConv(nn.Module):
    """Block 0 of MobileNetV3-Large: depthwise 3x3 + BN + ReLU, pointwise + BN, identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv_pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x))))) + x


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise kxk -> optional SE -> project 1x1, shortcut when shapes allow."""

    def __init__(self, cin: int, mid: int, cout: int, k: int, stride: int, se: int, hs: bool) -> None:
        super().__init__()
        self.hs = hs
        self.residual = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, ((stride - 1) + (k - 1)) // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, se) if se else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = _act(self.bn1(self.conv_pw(x)), self.hs)
        y = self.se(_act(self.bn2(self.conv_dw(y)), self.hs))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.residual else y


class ConvBnAct(nn.Module):
    """The 1x1 160->960 head block (stride 32).  Never used for FTP-VM's output, kept for the weights."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.hardswish(self.bn1(self.conv(x)))


class MobileNetV3Features(nn.Module):
    """MobileNetV3-Large-1.0 feature extractor with timm's module names (conv_stem, bn1, blocks.i.j)."""

    channels = (16, 24, 40, 112)

    def __init__(self, run_unused: bool = False) -> None:
        super().__init__()
        self.run_unused = run_unused
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = [nn.Sequential(DepthwiseSeparableConv(16))]
        stages += [nn.Sequential(*(InvertedResidual(*cfg) for cfg in stage)) for stage in _MBV3_STAGES[1:]]
        stages.append(nn.Sequential(ConvBnAct(160, 960)))
        self.blocks = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``[M, 3, H, W]`` -> 4 feature maps at strides 2, 4, 8, 16."""
        x = F.hardswish(self.bn1(self.conv_stem(x)))
        feats = []
        for i in range(_FEATURE_BLOCKS[-1] + 1):
            x = self.blocks[i](x)
            if i in _FEATURE_BLOCKS:
                feats.append(x)
        if self.run_unused and self.training:  # as timm: updates the BN statistics of blocks 5-6, output dropped
            with torch.no_grad():
                self.blocks[6](self.blocks[5](x))
        return feats


class Backbone(nn.Module):
    """Holds the feature extractor under ``.backbone`` so that keys read ``backbone.backbone.*``.

    Runs on ``[B, T, 3, H, W]`` clips (frames folded into the batch) and returns ``[B, T, C, h, w]`` maps.
    """

    def __init__(self, run_unused: bool = False) -> None:
        super().__init__()
        self.backbone = MobileNetV3Features(run_unused)
        self.channels = list(MobileNetV3Features.channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        b, t = x.shape[:2]
        return [f.unflatten(0, (b, t)) for f in self.backbone(x.flatten(0, 1))]


def timm_imagenet_to_ftpvm(state_dict: Mapping[str, Tensor], prefix: str = "backbone.backbone.") -> dict[str, Tensor]:
    """Keys of timm's ImageNet ``mobilenetv3_large_100`` checkpoint -> FTP-VM's backbone keys.

    The authors start training from these weights (``backbone_pretrained=True``).  The classifier head
    (``conv_head``, ``classifier``) is dropped, as ``features_only`` does; load the result with
    ``strict=False`` into a fresh ``FTPVM`` (everything outside the backbone stays initialised).
    """
    keep = ("conv_stem.", "bn1.", "blocks.")
    return {prefix + k: v for k, v in state_dict.items() if k.startswith(keep)}
