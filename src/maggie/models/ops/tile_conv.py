"""Sparse refinement on dense tiles: the submanifold layers of ``sparse_conv`` run as dense convolutions
over the tiles that hold active sites.

The rulebook backend (``SparseLevel``) gathers every active site's 3x3 neighbourhood and multiplies; on a
CPU the gathers cost more than the arithmetic (a 5-person 512x512 forward spent 1.2 s in ``index_select``).
Here the image is cut into a grid of tiles (``tile`` px at the finest level, half as many per level down);
only tiles with an active site at some level are kept, the same tiles at every level, as a batch
``[K, C, t, t]``.  A 3x3 submanifold convolution pads each tile with a one-pixel halo taken from its
neighbour tiles (zeros where the neighbour holds no active site), runs one dense ``conv2d`` over the batch
and zeroes the inactive sites again, so inactive neighbours count as zero exactly as in spconv.  Cost
follows the area of the active tiles, never more than the dense path's.

Everything that only needs the mask (batch norm with statistics over active sites, activations,
per-site functions) is ``DenseLevel``'s, applied to the tile batch.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.ops.reductions import any_along
from maggie.models.ops.sparse_conv import DenseLevel, SparseInverseConv2d, SparseLevel, SubMConv2d
from maggie.models.ops.spectral_norm import SNConv2d, batch_norm_affine

DEFAULT_TILE = 32  # px at the finest level: 4 px at OS8, where only per-site layers run

# Below this share of the needed pixels in their 8-px tiles (thin bands), a lazy branch is evaluated per site
# (gathered 3x3 neighbourhoods and one matmul per convolution) instead of on the tiles (measured: benchmarks/README.md).
LAZY_SITE_MAX_FILL = 0.5

# Neighbour offsets (dy, dx) in the order the halo is assembled.
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _grow(active: torch.Tensor) -> torch.Tensor:
    """``[B, h, w]`` bool -> the sites a 3x3 convolution at ``active`` reads (a 3x3 dilation, boolean ORs)."""
    x = F.pad(active, (1, 1, 1, 1))
    rows = x[:, :-2] | x[:, 1:-1] | x[:, 2:]
    return rows[..., :-2] | rows[..., 1:-1] | rows[..., 2:]


def _tiles_of(x: torch.Tensor, t: int, rows: int, cols: int) -> torch.Tensor:
    """``[B, C, h, w]`` -> view ``[B, rows, cols, C, t, t]`` (padded with zeros up to the grid)."""
    b, c, h, w = x.shape
    if (h, w) != (rows * t, cols * t):
        x = F.pad(x, (0, cols * t - w, 0, rows * t - h))
    return x.unfold(2, t, t).unfold(3, t, t).permute(0, 2, 3, 1, 4, 5)


class TileGrid:
    """The tiles that hold an active site at one of the levels ``actives`` (finest first, each half the size of
    the one before), and each tile's neighbours."""

    def __init__(self, actives: list[torch.Tensor], tile: int = DEFAULT_TILE):
        if tile % (1 << (len(actives) - 1)):
            raise ValueError(f"tile {tile} is not divisible by {1 << (len(actives) - 1)}")
        self.tile = tile
        b, h, w = actives[0].shape
        self.rows, self.cols = -(-h // tile), -(-w // tile)
        used = torch.zeros(b, self.rows, self.cols, dtype=torch.bool, device=actives[0].device)
        for level, active in enumerate(actives):
            t = tile >> level
            h, w = active.shape[-2:]
            grid = F.pad(active, (0, self.cols * t - w, 0, self.rows * t - h)) if (h, w) != (self.rows * t,
                                                                                        self.cols * t) else active
            used |= any_along(grid.reshape(b * self.rows, t, self.cols, t), (1, 3)).reshape(b, self.rows, self.cols)
        self.coords = torch.nonzero(used)  # [K, 3]: item, tile row, tile column
        k = self.coords.shape[0]
        index = torch.full((b, self.rows + 2, self.cols + 2), k, dtype=torch.long, device=used.device)
        bi, ty, tx = self.coords.unbind(1)
        index[bi, ty + 1, tx + 1] = torch.arange(k, device=used.device)
        self._padded_index = index
        self.index = index[:, 1:-1, 1:-1]  # [B, rows, cols]: the tile at each cell, K where none is kept
        self._actives = actives

    @functools.cached_property
    def neighbours(self) -> torch.Tensor:
        """``[K, 9]``: the tile at each offset, or K (an all-zero tile) where there is none (made on first use: a
        grid built only for its ``fill`` never reads it)."""
        bi, ty, tx = self.coords.unbind(1)
        return torch.stack([self._padded_index[bi, ty + 1 + dy, tx + 1 + dx] for dy, dx in _OFFSETS], dim=1)

    @functools.cached_property
    def levels(self) -> list[TileLevel]:
        """Each level's tiles (made on first use: deciding between tiles and per-site gathers needs only ``fill``)."""
        return [TileLevel(self, active, self.tile >> level) for level, active in enumerate(self._actives)]

    @property
    def num_tiles(self) -> int:
        return self.coords.shape[0]

    def fill(self, active: torch.Tensor) -> float:
        """The share of the kept tiles' pixels that ``active`` (the finest level) holds."""
        return float(active.count_nonzero()) / max(1, self.num_tiles * self.tile * self.tile)  # sum: 20x slower

    def extract(self, dense: torch.Tensor, t: int, group: int = 1) -> torch.Tensor:
        """The kept tiles ``[K, C, t, t]`` of per-item maps ``[B / group, C, h, w]`` (item ``i`` reads map
        ``i // group``)."""
        view = _tiles_of(dense, t, self.rows, self.cols).permute(0, 1, 2, 4, 5, 3)
        bi, ty, tx = self.coords.unbind(1)
        # Channels last (oneDNN's own layout): no reorder around each of the tiles' convolutions.
        return view[torch.div(bi, group, rounding_mode="floor"), ty, tx].permute(0, 3, 1, 2)


class LazyBranch:
    """A dense per-frame branch (3x3 convolutions with zero padding, per-pixel layers between them) whose output
    only the refinement reads, at its uncertain pixels: computed on the tiles that hold them, not the whole map.

    The MaGGIe encoder's full-resolution shortcut branches feed nothing but the refinement; at OS1 the first one
    alone was a third of a 512 x 512 encoder pass.  ``tiles`` evaluates the branch on each needed tile with the
    halo its convolutions read (zero outside the image, as their padding), so the values equal the dense map's.
    """

    def __init__(self, branch: torch.nn.Sequential, x: torch.Tensor):
        convs = [m for m in branch if isinstance(m, SNConv2d)]
        if any(m.stride != 1 or m.padding != 1 or m.module.weight_bar.shape[-1] != 3 for m in convs):
            raise ValueError("a lazy branch takes 3x3 convolutions of stride 1 and padding 1")
        self.branch, self.x, self.halo = branch, x, len(convs)

    def dense(self) -> torch.Tensor:
        return self.branch(self.x)

    def at_sites(self, active: torch.Tensor, group: int, tile: int = 8, coords: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The branch's output at the active sites of ``active`` ``[B, h, w]`` (item ``i`` on frame ``i // group``),
        ``[N, C]`` in ``nonzero`` order (``coords``: that ``nonzero``, if the caller has it): per site where the
        sites are a thin band, else on the ``tile``-px tiles of the frames that hold them."""
        b, h, w = active.shape
        frames = any_along(active.reshape(b // group, group, h, w), 1) if group > 1 else active
        grid = TileGrid([frames], tile)
        if grid.fill(frames) < LAZY_SITE_MAX_FILL:
            values, index = self.per_site(frames)
            if group == 1:  # the frames' sites are the items' own, in the same order
                return values
            bi, y, x = (torch.nonzero(active) if coords is None else coords).unbind(1)
            return values.index_select(0, index[torch.div(bi, group, rounding_mode="floor"), y + 1, x + 1])
        values = self.tiles(grid, tile, 1)
        bi, y, x = (torch.nonzero(active) if coords is None else coords).unbind(1)
        ids = grid.index[torch.div(bi, group, rounding_mode="floor"), torch.div(y, tile, rounding_mode="floor"),
                         torch.div(x, tile, rounding_mode="floor")]
        return values[ids, :, y % tile, x % tile]

    def per_site(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The branch's output at the active sites of ``frames`` ``[F, h, w]``, ``[M, C]`` in ``nonzero`` order, and
        the row of each pixel's site ``[F, h + 2, w + 2]`` (-1: none; a one-pixel border): each convolution
        gathers the 3x3 neighbourhoods of the sites the next one reads (zero outside the image, as its padding)
        and multiplies once.  For bands a pixel or two wide, where most of a tile would be wasted work."""
        sets = [frames]
        for _ in range(self.halo - 1):
            sets.append(_grow(sets[-1]))
        sets.reverse()  # sets[j]: where the j-th convolution's output is read
        x = self.x
        c, h, w = x.shape[1:]
        dy = torch.tensor([o[0] for o in _OFFSETS], device=x.device)
        dx = torch.tensor([o[1] for o in _OFFSETS], device=x.device)
        index = coords = None
        y = x  # the branch starts with a convolution, which reads x itself
        j = 0
        for m in self.branch:
            if isinstance(m, nn.BatchNorm2d):
                y = F.batch_norm(y, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
            elif not isinstance(m, SNConv2d):
                y = m(y)
            else:
                weight = m.module.normalised_weight()  # [out, in, 3, 3]
                coords = torch.nonzero(sets[j])
                fb, fy, fx = (v[:, None] for v in coords.unbind(1))
                if j == 0:  # from the dense input (channels-last in inference: the flat view is free)
                    ys, xs = fy + dy, fx + dx
                    outside = torch.nonzero(((ys < 0) | (ys >= h) | (xs < 0) | (xs >= w)).flatten()).flatten()
                    rows = (fb * h + ys.clamp(0, h - 1)) * w + xs.clamp(0, w - 1)
                    flat = x.permute(0, 2, 3, 1).reshape(-1, c)
                    y = flat.index_select(0, rows.flatten())
                    if outside.numel():  # the padding (a few border pixels: cheaper than masking every row)
                        y = y.index_fill_(0, outside, 0.0)
                    y = y.reshape(-1, len(_OFFSETS) * c) @ weight.permute(2, 3, 1, 0).reshape(-1, weight.shape[0])
                else:  # from the previous convolution's sites
                    y = SparseLevel._gather_matmul(y, index[fb, fy + 1 + dy, fx + 1 + dx], weight.permute(0, 2, 3, 1))
                if m.module.bias is not None:
                    y = y + m.module.bias
                index = torch.full((sets[j].shape[0], h + 2, w + 2), -1, dtype=torch.long, device=x.device)
                index[coords[:, 0], coords[:, 1] + 1, coords[:, 2] + 1] = torch.arange(coords.shape[0], device=x.device)
                j += 1
        return y, index

    def tiles(self, grid: TileGrid, t: int, group: int) -> torch.Tensor:
        """The branch's output on the grid's tiles ``[K, C, t, t]`` (item ``i`` reads frame ``i // group``)."""
        x, r = self.x, self.halo
        h, w = x.shape[-2:]
        bi, ty, tx = grid.coords.unbind(1)
        key = (torch.div(bi, group, rounding_mode="floor") * grid.rows + ty) * grid.cols + tx
        needed, inverse = torch.unique(key, return_inverse=True)  # a frame's tiles, shared by its people
        cells = grid.rows * grid.cols
        frame = torch.div(needed, cells, rounding_mode="floor")
        rows, cols = (needed % cells) // grid.cols, needed % grid.cols
        size = t + 2 * r
        padded = F.pad(x, (r, grid.cols * t - w + r, r, grid.rows * t - h + r))
        y = padded.unfold(2, size, t).unfold(3, size, t).permute(0, 2, 3, 4, 5, 1)[frame, rows, cols]
        y = y.permute(0, 3, 1, 2)  # channels last, as the convolutions run
        for m in self.branch:
            if not isinstance(m, SNConv2d):
                y = m(y)
                continue
            if r < self.halo:  # an inner map: outside the image it is the convolution's zero padding
                offsets = torch.arange(-r, t + r, device=x.device)
                ys, xs = rows[:, None] * t + offsets, cols[:, None] * t + offsets
                inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
                y = y * inside[:, None].to(y.dtype)
            y = F.conv2d(y, m.module.weight_for(y), m.module.bias)  # valid: the halo is the padding
            r -= 1
        return y[inverse]


class TileLevel(DenseLevel):
    """Features of one level as the grid's tiles ``[K, C, t, t]``, zero at inactive sites.

    In inference (no gradients) the zeros are made only where they matter: per-pixel steps (batch norm,
    activations, gating, gathers) leave whatever they compute at inactive sites, and a tile is masked
    right before a 3x3 or transposed convolution reads its neighbours, and when densified.  Training masks
    after every step, so the gradients see exactly the sparse network's sites.
    """

    def __init__(self, grid: TileGrid, active: torch.Tensor, t: int):
        self.grid, self.t = grid, t
        self.active = active
        self.mask = grid.extract(active[:, None].float(), t)

    @staticmethod
    def _lazy() -> bool:
        return not torch.is_grad_enabled()

    def apply_mask(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._lazy() else x * self.mask.to(x.dtype)

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with zeros at inactive sites (already so outside inference)."""
        return x * self.mask.to(x.dtype) if self._lazy() else x

    @functools.cached_property
    def _halo_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every pixel of every tile with its one-pixel border, the row it reads in the level's sites as
        ``[K * t * t, C]``; and the border pixels that no kept tile holds (they read zero)."""
        t, nb = self.t, self.grid.neighbours  # nb [K, 9]: the tile at each offset of _OFFSETS, K for none
        p = torch.arange(t + 2, device=nb.device)
        side = (p > 0).long() + (p > t).long()  # 0: from the tile before, 1: the tile itself, 2: the tile after
        src = torch.where(p == 0, t - 1, torch.where(p > t, 0, p - 1))  # the pixel read in that tile
        tiles = nb[:, side[:, None] * 3 + side[None, :]]  # [K, t + 2, t + 2]
        missing = tiles == nb.shape[0]
        rows = torch.where(missing, 0, (tiles * t + src[:, None]) * t + src[None, :])
        return rows.flatten(), torch.nonzero(missing.flatten()).flatten()

    def halo(self, x: torch.Tensor) -> torch.Tensor:
        """``[K, C, t, t]`` -> ``[K, C, t + 2, t + 2]``: each tile with a one-pixel border from its neighbours,
        gathered in one pass as channels-last rows (the layout the convolution that reads it runs in)."""
        k, c, t, _ = x.shape
        rows, missing = self._halo_rows
        out = x.permute(0, 2, 3, 1).reshape(k * t * t, c).index_select(0, rows)
        if missing.numel():
            out = out.index_fill(0, missing, 0.0)
        return out.reshape(k, t + 2, t + 2, c).permute(0, 3, 1, 2)

    def subm(self, conv: SubMConv2d, x: torch.Tensor) -> torch.Tensor:
        if conv.kernel_size == 1:
            return super().subm(conv, x)
        if conv.kernel_size != 3:
            raise ValueError(f"tiled submanifold convolution supports kernels 1 and 3, got {conv.kernel_size}")
        return self.apply_mask(F.conv2d(self.halo(self.masked(x)), conv.dense_weight(), conv.bias))

    def subm_bn(self, conv: SubMConv2d, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        """``batch_norm(bn, subm(conv, x))``; in inference one convolution with the batch norm folded in."""
        if not self._lazy() or bn.training or conv.kernel_size not in (1, 3):
            return super().subm_bn(conv, bn, x)
        scale, shift = batch_norm_affine(bn)
        bias = shift if conv.bias is None else shift + conv.bias * scale
        weight = conv.dense_weight() * scale[:, None, None, None]
        return F.conv2d(self.halo(self.masked(x)) if conv.kernel_size == 3 else x, weight, bias)

    def inverse_bn(self, conv: SparseInverseConv2d, bn: nn.BatchNorm1d, coarse_x: torch.Tensor,
                   coarse: DenseLevel) -> torch.Tensor:
        if not self._lazy() or bn.training:
            return super().inverse_bn(conv, bn, coarse_x, coarse)
        scale, shift = batch_norm_affine(bn)
        weight = conv.weight.permute(3, 0, 1, 2) * scale[None, :, None, None]
        out = F.conv_transpose2d(coarse.halo(coarse.masked(coarse_x)), weight, stride=2)
        # The shift added to the kept window only: oneDNN's transposed convolution with a bias is 2.5x slower.
        return out[:, :, 3:3 + self.t, 3:3 + self.t] + shift[:, None, None]

    def inverse(self, conv: SparseInverseConv2d, coarse_x: torch.Tensor, coarse: DenseLevel) -> torch.Tensor:
        # Fine pixel i takes coarse o through kernel offset k where i = 2 o - 1 + k.  With a one-pixel halo
        # on the coarse tile (o' = o + 1) and no padding, the transposed convolution writes i at i + 3.
        weight = conv.weight.permute(3, 0, 1, 2)  # [in, out, kh, kw]
        out = F.conv_transpose2d(coarse.halo(coarse.masked(coarse_x)), weight, stride=2)
        return self.apply_mask(out[:, :, 3:3 + self.t, 3:3 + self.t])

    def gather(self, dense: torch.Tensor | LazyBranch, group: int) -> torch.Tensor:
        if isinstance(dense, LazyBranch):
            return self.apply_mask(dense.tiles(self.grid, self.t, group))
        return self.apply_mask(self.grid.extract(dense, self.t, group))

    def per_item(self, values: torch.Tensor) -> torch.Tensor:
        per_tile = values.index_select(0, self.grid.coords[:, 0])
        return self.apply_mask(per_tile[:, :, None, None].expand(-1, -1, self.t, self.t))

    def to_dense(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        g = self.grid
        b, h, w = self.active.shape
        c, t = x.shape[1], self.t
        flat = x.new_zeros(b * g.rows * g.cols, c, t, t)
        bi, ty, tx = g.coords.unbind(1)
        flat = flat.index_copy(0, (bi * g.rows + ty) * g.cols + tx, self.masked(x))
        out = flat.reshape(b, g.rows, g.cols, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g.rows * t, g.cols * t)
        out = out[:, :, :h, :w]
        mask = self.active[:, None].to(x.dtype)
        if fill == -99.0:  # the reference densifies with zeros, subtracts 99 and adds it back at active sites
            return (out - 99.0) + 99.0 * mask
        return torch.where(mask > 0, out, torch.full_like(out, fill))
