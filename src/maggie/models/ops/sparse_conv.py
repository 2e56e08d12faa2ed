"""Pure-PyTorch replacements for the spconv layers of the MaGGIe refinement branch.

Semantics follow spconv 2.x exactly: a submanifold convolution has outputs only at the
active sites of its input and treats inactive neighbours as zero; the stride-2 sparse
convolutions (k3, p1) only matter through the active sets they create (a 3x3 / stride 2 /
pad 1 max-pool of the finer set); an inverse convolution tied to such a stride-2 layer
maps features of the coarse set back onto the fine set.  Weights keep the official
spconv layout ``[out, kh, kw, in]`` so checkpoints load unchanged.

Two interchangeable backends run the same layer sequence:

* ``DenseLevel``: masked dense convolutions on full maps.  Memory and time follow the image
  area; it is the reference for tests and the path used for ONNX export.
* ``SparseLevel``: features only at active sites ``[N, C]``; a convolution gathers each site's
  neighbours (rulebook) and does one matmul, so cost follows the uncertain area, and
  BatchNorm statistics are those of the active sites (as spconv's ``BatchNorm1d``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHUNK_SITES = 1 << 16


class SubMConv2d(nn.Module):
    """Submanifold convolution; ``weight`` is ``[out, k, k, in]`` (spconv layout).

    spconv 2.x runs 1x1 submanifold convolutions as a plain matmul with the stored
    ``[out, 1, 1, in]`` tensor *reshaped* (not transposed) to ``[in, out]``.  The official
    weights were trained through that path, so ``matrix()`` reproduces it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, in_channels))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def matrix(self) -> torch.Tensor:
        """The ``[in, out]`` matrix a 1x1 submanifold convolution multiplies features with."""
        return self.weight.reshape(self.weight.shape[-1], self.weight.shape[0])

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``conv2d`` weight ``[out, in, k, k]``."""
        if self.kernel_size == 1:
            return self.matrix().t()[:, :, None, None]
        return self.weight.permute(0, 3, 1, 2)


class SparseInverseConv2d(nn.Module):
    """Inverse of a stride-2, k3, p1 sparse convolution: coarse set -> fine set."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, in_channels))
        nn.init.xavier_uniform_(self.weight)


class FrozenSparseConv(nn.Module):
    """Holds a weight of the reference's index-building ``dummy_downscale`` chain.

    The reference runs that chain only to create the coordinate sets; its features are
    discarded and its weights never trained.  We keep the tensors so that checkpoints
    round-trip, and compute the sets directly (``downsample_sites``).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.register_buffer("weight", torch.zeros(out_channels, 3, 3, in_channels))


def downsample_sites(active: torch.Tensor) -> torch.Tensor:
    """Active set of a stride-2, k3, p1 sparse convolution: ``[B, h, w]`` bool -> ``[B, ceil(h/2), ceil(w/2)]``
    (a 3x3, stride-2 max-pool, as boolean ORs: CPU max-pooling also computes indices, several times slower)."""
    h, w = active.shape[-2:]
    ho, wo = (h + 1) // 2, (w + 1) // 2
    x = F.pad(active.bool(), (1, 1, 1, 1))
    rows = x[:, 0: 2 * ho - 1: 2] | x[:, 1: 2 * ho: 2] | x[:, 2: 2 * ho + 1: 2]
    return rows[..., 0: 2 * wo - 1: 2] | rows[..., 1: 2 * wo: 2] | rows[..., 2: 2 * wo + 1: 2]


class _ConvThenNorm:
    """A convolution followed by its batch norm, step by step (``TileLevel`` folds the two in inference)."""

    def subm_bn(self, conv: SubMConv2d, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return self.batch_norm(bn, self.subm(conv, x))

    def inverse_bn(self, conv: SparseInverseConv2d, bn: nn.BatchNorm1d, coarse_x: torch.Tensor,
                   coarse) -> torch.Tensor:
        return self.batch_norm(bn, self.inverse(conv, coarse_x, coarse))


class DenseLevel(_ConvThenNorm):
    """Features as dense maps ``[B, C, h, w]`` that are zero outside the active mask."""

    def __init__(self, active: torch.Tensor):
        self.active = active  # [B, h, w] bool
        self.mask = active[:, None].float()

    def apply_mask(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype)

    def subm(self, conv: SubMConv2d, x: torch.Tensor) -> torch.Tensor:
        return self.apply_mask(F.conv2d(x, conv.dense_weight(), conv.bias, padding=conv.kernel_size // 2))

    def inverse(self, conv: SparseInverseConv2d, coarse_x: torch.Tensor, coarse: DenseLevel) -> torch.Tensor:
        weight = conv.weight.permute(3, 0, 1, 2)  # [in, out, kh, kw] for conv_transpose2d
        out = F.conv_transpose2d(coarse_x, weight, stride=2, padding=1, output_padding=1)
        return self.apply_mask(out)

    def batch_norm(self, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        if bn.training:
            # Statistics over active sites only, as spconv's BatchNorm1d sees them.
            m = self.mask.to(x.dtype)
            count = m.sum().clamp_min(1.0)
            mean = (x * m).sum((0, 2, 3)) / count
            var = (((x - mean[None, :, None, None]) ** 2) * m).sum((0, 2, 3)) / count
            with torch.no_grad():
                bn.num_batches_tracked += 1
                mom = bn.momentum
                unbiased = var * count / (count - 1).clamp_min(1.0)
                bn.running_mean.mul_(1 - mom).add_(mom * mean)
                bn.running_var.mul_(1 - mom).add_(mom * unbiased)
            y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
            y = y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        else:
            y = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return self.apply_mask(y)

    def pointwise(self, fn, x: torch.Tensor) -> torch.Tensor:
        """Apply a per-site function acting on the last (channel) dimension."""
        y = fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.apply_mask(y)

    def activation(self, fn, x: torch.Tensor) -> torch.Tensor:
        return self.apply_mask(fn(x))

    def gather(self, dense: torch.Tensor, group: int) -> torch.Tensor:
        """Dense per-frame features ``[B/group, C, h, w]`` seen at each item's active sites."""
        return self.apply_mask(dense.repeat_interleave(group, dim=0))

    def per_item(self, values: torch.Tensor) -> torch.Tensor:
        """Per-item channel vectors ``[B, C]`` broadcast over the active sites."""
        return self.apply_mask(values[:, :, None, None].expand(-1, -1, *self.active.shape[-2:]))

    def to_dense(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        # The reference densifies with zeros, subtracts 99 and adds 99 back at active sites.
        return (x - 99.0) + 99.0 * self.mask.to(x.dtype) if fill == -99.0 else torch.where(
            self.mask > 0, x, torch.full_like(x, fill))

    def concat(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class SparseLevel(_ConvThenNorm):
    """Features only at active sites: ``[N, C]`` rows in ``nonzero`` order (item, y, x)."""

    def __init__(self, active: torch.Tensor):
        self.active = active
        self.shape = active.shape
        self.coords = torch.nonzero(active)  # [N, 3]
        b, y, x = self.coords.unbind(1)
        # The sites' flat positions, ascending (``nonzero`` order): neighbours are found by binary search, so no
        # per-item full-resolution index map is made (with ten people at OS1 that map was most of the set-up).
        self.keys = (b * active.shape[1] + y) * active.shape[2] + x
        self._neighbours: dict[int, torch.Tensor] = {}

    @property
    def num_sites(self) -> int:
        return self.coords.shape[0]

    def find(self, bs: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Row of the site at (item, y, x) for each query, -1 where there is none (or it lies outside)."""
        h, w = self.shape[-2:]
        if self.keys.numel() == 0:
            return torch.full_like(ys, -1)
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        query = (bs * h + ys) * w + xs
        pos = torch.searchsorted(self.keys, query).clamp_max(self.keys.numel() - 1)
        return torch.where(inside & (self.keys[pos] == query), pos, torch.full_like(pos, -1))

    def neighbours(self, k: int) -> torch.Tensor:
        """``[N, k*k]`` row index of each site's neighbour at kernel offset (ky, kx); -1 if inactive."""
        if k not in self._neighbours:
            b, y, x = (v[:, None] for v in self.coords.unbind(1))
            r = k // 2
            d = torch.arange(-r, r + 1, device=self.coords.device)
            dy, dx = d.repeat_interleave(k), d.repeat(k)  # row-major kernel offsets
            self._neighbours[k] = self.find(b, y + dy, x + dx)  # all offsets in one search: [N, k*k]
        return self._neighbours[k]

    @staticmethod
    def _gather_matmul(feats: torch.Tensor, rules: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """out[i] = sum_k feats[rules[i, k]] @ weight[k]; rows with rule -1 contribute zero."""
        kk = rules.shape[1]
        w = weight.permute(1, 2, 3, 0).reshape(kk * weight.shape[-1], weight.shape[0])  # [(k*k*in), out]
        padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], dim=0)
        safe = torch.where(rules < 0, torch.full_like(rules, feats.shape[0]), rules)
        outs = []
        for start in range(0, safe.shape[0], CHUNK_SITES):
            # index_select, not fancy indexing: its backward is an index_add, several times
            # faster on CPU than the accumulating index_put that ``padded[idx]`` backpropagates through.
            idx = safe[start:start + CHUNK_SITES]
            chunk = padded.index_select(0, idx.reshape(-1)).reshape(idx.shape[0], -1)  # [n, k*k*in]
            outs.append(chunk @ w)
        if not outs:
            return feats.new_zeros(0, weight.shape[0])
        return torch.cat(outs, dim=0)

    def subm(self, conv: SubMConv2d, x: torch.Tensor) -> torch.Tensor:
        if conv.kernel_size == 1:
            out = x @ conv.matrix()
        else:
            out = self._gather_matmul(x, self.neighbours(conv.kernel_size), conv.weight)
        return out if conv.bias is None else out + conv.bias

    def inverse(self, conv: SparseInverseConv2d, coarse_x: torch.Tensor, coarse: SparseLevel) -> torch.Tensor:
        # Fine site i receives coarse site o through kernel offset k when i = 2*o - 1 + k: a fine row y reads
        # kernel row 1 if y is even, rows 0 and 2 if odd (the same for columns).  Sites are taken by the parity of
        # (y, x), each class gathering only its 1, 2 or 4 taps (a quarter of the 9-tap gather and multiply).
        b, y, x = self.coords.unbind(1)
        out = None
        parity = (y % 2) * 2 + x % 2
        for cls in range(4):
            rows = torch.nonzero(parity == cls).flatten()
            if rows.numel() == 0:
                continue
            ky = torch.tensor([1] if cls < 2 else [0, 2], device=y.device)
            kx = torch.tensor([1] if cls % 2 == 0 else [0, 2], device=y.device)
            cy = torch.div(y[rows, None] + 1 - ky, 2, rounding_mode="floor")  # [n, taps in y]
            cx = torch.div(x[rows, None] + 1 - kx, 2, rounding_mode="floor")
            rules = coarse.find(b[rows, None, None], cy[:, :, None], cx[:, None, :]).reshape(rows.numel(), -1)
            weight = conv.weight.index_select(1, ky).index_select(2, kx)  # [out, taps y, taps x, in]
            part = self._gather_matmul(coarse_x, rules, weight)
            if out is None:  # the dtype the multiply gives (bfloat16 under autocast)
                out = part.new_empty(self.num_sites, part.shape[1])
            out.index_copy_(0, rows, part)
        return out if out is not None else coarse_x.new_zeros(0, conv.weight.shape[0])

    def batch_norm(self, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        if bn.training and x.shape[0] == 1:
            return x  # a single site has no batch statistics (torch would raise)
        return bn(x)

    def pointwise(self, fn, x: torch.Tensor) -> torch.Tensor:
        return fn(x)

    def activation(self, fn, x: torch.Tensor) -> torch.Tensor:
        return fn(x)

    def gather(self, dense, group: int) -> torch.Tensor:
        if hasattr(dense, "at_sites"):  # a branch evaluated only where it is read (tile_conv.LazyBranch)
            return dense.at_sites(self.active, group, coords=self.coords)
        b, y, x = self.coords.unbind(1)
        # Fancy indexing here: index_select would need a channels-last copy of the whole map.
        return dense[torch.div(b, group, rounding_mode="floor"), :, y, x]

    def per_item(self, values: torch.Tensor) -> torch.Tensor:
        return values.index_select(0, self.coords[:, 0])

    def to_dense(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        b, y, xx = self.coords.unbind(1)
        out = x.new_full((self.shape[0], x.shape[1], *self.shape[1:]), fill)
        # The reference densifies with zeros, subtracts 99 and adds it back at the sites: the same rounding here.
        out[b, :, y, xx] = (x - 99.0) + 99.0 if fill == -99.0 else x
        return out

    def concat(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)
