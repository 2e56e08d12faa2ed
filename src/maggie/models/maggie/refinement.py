"""Sparse progressive refinement of MaGGIe: OS8 instance features -> OS4 and OS1 mattes.

Runs only inside the detail region D (the dilated uncertainty of the OS8 matte), per
(frame, instance) item.  The layer names and order are those of the reference decoder
(``layer3``, ``guidance_layer``, ``layer3_smooth``, ``refine_OS4``, ``layer4``, ...), so
checkpoints map one to one; ``sparse_ops`` supplies the dense and the sparse backend.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.maggie.imd import FFNLayer
from maggie.models.ops.sparse_conv import (
    DenseLevel,
    FrozenSparseConv,
    SparseInverseConv2d,
    SparseLevel,
    SubMConv2d,
    downsample_sites,
)
from maggie.models.ops.tile_conv import TileGrid

# Below this share of uncertain pixels in their tiles (thin bands), the per-site rulebook costs less than dense
# convolutions over the tiles (measured: benchmarks/README.md, "Inference against the reference").
TILE_MIN_FILL = 0.35


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class SparseRefiner(nn.Module):
    """The refinement layers; the MaGGIe decoders inherit them so keys sit directly under ``decoder.``."""

    def __init__(self, channels: int = 64):
        super().__init__()
        c = channels
        self.inst_spec_layer = FFNLayer(c, c, dropout=0.1)
        # Index-building chain of the reference (weights kept only for checkpoint round trips).
        self.dummy_downscale = nn.ModuleList(
            [FrozenSparseConv(3, 32), FrozenSparseConv(32, 32), FrozenSparseConv(32, 64), FrozenSparseConv(64, 64)]
        )
        self.layer3 = nn.Sequential(SparseInverseConv2d(c, 64), nn.BatchNorm1d(64), nn.LeakyReLU(0.2),
                                    SubMConv2d(64, 64, 3))
        self.guidance_layer = nn.Sequential(SubMConv2d(128, 64, 1), nn.BatchNorm1d(64), nn.LeakyReLU(0.2),
                                            SubMConv2d(64, 64, 3, bias=True), nn.Sigmoid())
        self.layer3_smooth = nn.Sequential(SubMConv2d(64, 64, 1, bias=True), nn.ReLU(), nn.BatchNorm1d(64))
        self.layer4 = nn.Sequential(SparseInverseConv2d(64, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
                                    SubMConv2d(32, 32, 1))
        self.layer4_smooth = nn.Sequential(SubMConv2d(64, 32, 1, bias=True), nn.ReLU(), nn.BatchNorm1d(32))
        self.layer5 = nn.Sequential(SparseInverseConv2d(32, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
                                    SubMConv2d(32, 32, 3))
        self.layer5_smooth = nn.Sequential(SubMConv2d(64, 32, 1, bias=True), nn.ReLU(), nn.BatchNorm1d(32))
        self.refine_OS4 = nn.Sequential(SubMConv2d(64, 32, 3), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
                                        SubMConv2d(32, 1, 3, bias=True))
        self.refine_OS1 = nn.Sequential(SubMConv2d(32, 32, 3), nn.BatchNorm1d(32), nn.LeakyReLU(0.2),
                                        SubMConv2d(32, 1, 3, bias=True))

    @staticmethod
    def _head(level, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        x = level.activation(_leaky, level.subm_bn(seq[0], seq[1], x))
        return level.subm(seq[3], x)

    @staticmethod
    def _up(fine, coarse, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        x = fine.activation(_leaky, fine.inverse_bn(seq[0], seq[1], x, coarse))
        return fine.subm(seq[3], x)

    @staticmethod
    def _smooth(level, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        x = level.activation(F.relu, level.subm(seq[0], x))
        return level.batch_norm(seq[2], x)

    def refine_logits(
        self,
        detail: torch.Tensor,
        feat_os8: torch.Tensor,
        kernels: torch.Tensor,
        shortcuts: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        num_inst: int,
        mode: str = "sparse",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """OS4 and OS1 logits, ``[B*T*n, 1, H/4, W/4]`` and ``[B*T*n, 1, H, W]``, -99 outside D.

        detail: ``[B*T*n, H, W]`` bool region D; feat_os8 ``[B*T, 64, H/8, W/8]``;
        kernels: ``[B*T, n, 64]`` instance kernels; shortcuts: encoder (fea1, fea2, fea3).
        """
        s1 = detail
        s2 = downsample_sites(s1)
        s4 = downsample_sites(s2)
        s8 = downsample_sites(s4)
        grid = TileGrid([s1, s2, s4, s8]) if mode in ("sparse", "tiles") else None
        if mode == "sparse":  # tiles where they are mostly uncertain; thin bands per site
            mode = "tiles" if grid.fill(s1) >= TILE_MIN_FILL else "rulebook"
        if mode == "tiles":  # dense convolutions on the tiles that hold active sites (models/ops/tile_conv)
            l1, l2, l4, l8 = grid.levels
        else:  # rulebook: per-site neighbour gathers (spconv's own scheme); dense: masked full maps
            level_cls = {"rulebook": SparseLevel, "dense": DenseLevel}[mode]
            l1, l2, l4, l8 = (level_cls(s) for s in (s1, s2, s4, s8))
        fea1, fea2, fea3 = shortcuts

        # OS8: image features modulated by each instance's kernel, then the instance FFN.
        x = l8.gather(feat_os8, num_inst) * l8.per_item(kernels.reshape(-1, kernels.shape[-1]))
        x = l8.pointwise(self.inst_spec_layer, x)

        # OS4: the instance features only gate the instance-agnostic detail features.
        x = self._up(l4, l8, self.layer3, x)
        detail4 = l4.gather(fea3, num_inst)
        g = l4.concat(detail4, x)
        g = l4.activation(_leaky, l4.subm_bn(self.guidance_layer[0], self.guidance_layer[1], g))
        g = l4.activation(torch.sigmoid, l4.subm(self.guidance_layer[3], g))
        x = detail4 * g
        x = self._smooth(l4, self.layer3_smooth, x)
        logits4 = l4.to_dense(self._head(l4, self.refine_OS4, x), -99.0)

        # OS2 and OS1.
        x = self._up(l2, l4, self.layer4, x)
        x = self._smooth(l2, self.layer4_smooth, l2.concat(l2.gather(fea2, num_inst), x))
        x = self._up(l1, l2, self.layer5, x)
        x = self._smooth(l1, self.layer5_smooth, l1.concat(l1.gather(fea1, num_inst), x))
        logits1 = l1.to_dense(self._head(l1, self.refine_OS1, x), -99.0)
        return logits4, logits1
