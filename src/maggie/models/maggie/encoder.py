"""ResNet-34-D shortcut encoder of MGM/MaGGIe (reference: ``res_shortcut_29`` / ``res_shortcut_embed_29``).

A 29-layer ResNet-D with five shortcut branches that feed the decoder at OS1..OS16.
``num_embed > 0`` gives MaGGIe's instance-ID embedding input: the binary masks of up to
``num_mask`` instances become a ``num_embed``-channel map (the mean of the learned
embedding rows of the instances covering a pixel).  ``num_embed == 0`` stacks the
``num_mask`` masks as extra input channels (MGM and MGM*).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.ops.spectral_norm import SNConv2d, conv_bn, sn_conv1x1, sn_conv3x3
from maggie.models.ops.tile_conv import LazyBranch

ENCODER_CHANNELS = {"os1": 32, "os2": 32, "os4": 64, "os8": 128, "os16": 256, "os32": 512}


class EncoderBlock(nn.Module):
    """ResNet basic block with spectral-normalised convolutions and ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = sn_conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = sn_conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        nn.init.zeros_(self.bn2.weight)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(conv_bn(self.conv1, self.bn1, x), inplace=True)  # in place: one buffer fewer per layer
        out = conv_bn(self.conv2, self.bn2, out)
        identity = x
        if self.downsample is not None:  # average pool, 1x1 convolution, batch norm
            pool, conv, bn = self.downsample
            identity = conv_bn(conv, bn, pool(x))
        return F.relu(out.add_(identity), inplace=True)


def _shortcut(inplanes: int, planes: int) -> nn.Sequential:
    # ReLU comes before BN in these branches, as in the reference.
    return nn.Sequential(
        SNConv2d(inplanes, planes, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(planes),
        SNConv2d(planes, planes, 3, padding=1),
        nn.ReLU(),
        nn.BatchNorm2d(planes),
    )


class ShortcutEncoder(nn.Module):
    """Image (+ mask guidance) -> OS32 features and the OS1..OS16 shortcut features."""

    def __init__(self, num_mask: int = 10, num_embed: int = 3, layers: tuple[int, ...] = (3, 4, 4, 2)):
        super().__init__()
        self.num_mask = num_mask
        self.num_embed = num_embed
        in_ch = 3 + (num_embed if num_embed > 0 else num_mask)
        if num_embed > 0:
            self.mask_embed_layer = nn.Embedding(num_mask + 1, num_embed)
        self.conv1 = SNConv2d(in_ch, 32, 3, stride=2, padding=1)
        self.conv2 = SNConv2d(32, 32, 3, stride=1, padding=1)
        self.conv3 = SNConv2d(32, 64, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.bn2 = nn.BatchNorm2d(32)
        self.bn3 = nn.BatchNorm2d(64)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer_bottleneck = self._make_layer(512, layers[3], 2)
        self.shortcut = nn.ModuleList(
            _shortcut(i, p) for i, p in zip([in_ch, 32, 64, 128, 256], [32, 32, 64, 128, 256], strict=True)
        )
        # The reference zeroes the stem weights that read the guidance channels.
        with torch.no_grad():
            self.conv1.module.weight_bar[:, 3:] = 0

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1:
            downsample = nn.Sequential(
                nn.AvgPool2d(2, stride), sn_conv1x1(self._inplanes, planes), nn.BatchNorm2d(planes)
            )
        layers = [EncoderBlock(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes
        layers += [EncoderBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``[B, num_mask, H, W]`` binary masks -> ``[B, num_embed, H, W]`` ID embedding.

        Each pixel gets the mean of the embeddings of the instances covering it, 0 where none does.
        """
        dtype = self.mask_embed_layer.weight.dtype
        if masks.is_floating_point() and not torch.count_nonzero(torch.addcmul(masks, masks, masks, value=-1.0)):
            covered = masks.to(dtype)  # every value 0 or 1 (m - m * m is zero only there): the masks are the ids
        else:
            slots = torch.arange(1, masks.shape[1] + 1, device=masks.device)[None, :, None, None]
            ids = (masks * slots).long()  # the reference's instance ids (0: none)
            if not ((ids == 0) | (ids == slots)).all():  # ids that mix instances: the reference's lookup
                covered = (ids > 0).to(masks.dtype).unsqueeze(-1)
                emb = self.mask_embed_layer(ids) * covered
                return (emb.sum(1) / (covered.sum(1) + 1e-6)).permute(0, 3, 1, 2)
            covered = (ids > 0).to(dtype)
        # One id per mask: the mean embedding as one contraction, without an [N, H, W, num_embed] lookup.
        emb = torch.einsum("bnhw,nc->bchw", covered, self.mask_embed_layer.weight[1:masks.shape[1] + 1])
        return emb / (covered.sum(1, keepdim=True) + 1e-6)

    def forward(self, image: torch.Tensor, masks: torch.Tensor, lazy: int = 0) -> tuple[torch.Tensor, dict]:
        """image ``[B, 3, H, W]``, masks ``[B, num_mask, H, W]`` (padded with empty slots).

        ``lazy``: the first ``lazy`` shortcut branches come back unevaluated (``LazyBranch``), for a decoder that
        reads them only at its uncertain pixels (MaGGIe's tiled refinement)."""
        guide = self.embed_masks(masks) if self.num_embed > 0 else masks
        x = torch.cat([image, guide.to(image.dtype)], dim=1)
        if not self.training:  # oneDNN's own layout: no reorder around every convolution (inference only)
            x = x.contiguous(memory_format=torch.channels_last)
        out = F.relu(conv_bn(self.conv1, self.bn1, x), inplace=True)
        x1 = F.relu(conv_bn(self.conv2, self.bn2, out), inplace=True)
        out = F.relu(conv_bn(self.conv3, self.bn3, x1), inplace=True)
        x2 = self.layer1(out)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        out = self.layer_bottleneck(x4)
        shortcuts = tuple(LazyBranch(branch, f) if i < lazy else branch(f)
                          for i, (branch, f) in enumerate(zip(self.shortcut, (x, x1, x2, x3, x4), strict=True)))
        return out, {"shortcut": shortcuts, "image": image}
