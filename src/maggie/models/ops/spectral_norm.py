"""Spectral normalisation in the GCA-Matting / MaGGIe parameterisation.

The official checkpoints store each normalised convolution as ``<name>.module.weight_bar``
(the raw weight) plus the power-iteration vectors ``weight_u`` and ``weight_v``.  MaGGIe's
reference runs one power iteration on *every* forward, evaluation included, and writes the
new ``u``/``v`` back; we do the same, and the networks' evaluation forwards restore them on
exit (``preserved_power_iteration``), so calling a model twice gives the same matte.
InstMatt's code iterates only in training and evaluates with the stored ``u``/``v``
(``iterate_in_eval = False``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F


def _l2normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return v / (v.norm() + eps)


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d map stored channels-last (oneDNN's own layout, which the image networks use in inference)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class _SNWeights(nn.Module):
    """Holds ``weight_bar``, ``weight_u``, ``weight_v`` under the official key names."""

    def __init__(self, weight_shape: tuple[int, ...], bias: bool = False) -> None:
        super().__init__()
        height = weight_shape[0]
        width = 1
        for s in weight_shape[1:]:
            width *= s
        self.weight_bar = nn.Parameter(torch.empty(weight_shape))
        nn.init.xavier_uniform_(self.weight_bar)
        self.register_buffer("weight_u", _l2normalize(torch.randn(height)))
        self.register_buffer("weight_v", _l2normalize(torch.randn(width)))
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None

    iterate_in_eval = True
    _cache: tuple | None = None
    _layout: tuple | None = None  # (a weight, that weight channels-last)
    _calls: int | None = None  # calls in the current no-grad evaluation forward (None outside one)

    def _cached_weight(self) -> torch.Tensor:
        """The weight the ``_calls``-th power iteration of an evaluation forward gives, computed once.

        An evaluation forward starts from the stored ``u``/``v`` and restores them on exit, so its k-th call of
        this layer always sees the same weight; inference computes it once (without writing ``u``/``v``) until
        the weights or vectors change.  A layer called twice in one forward (the video network's change head)
        gets the second iteration's weight the second time, as the reference does."""
        w = self.weight_bar
        key = (w._version, w.data_ptr(), self.weight_u._version, self.weight_u.data_ptr(), w.dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, [], self.weight_u.to(w.dtype))
        weights, k = self._cache[1], self._calls
        self._calls += 1
        w_mat = w.reshape(w.shape[0], -1)
        while len(weights) <= k:
            u = self._cache[2]
            v = _l2normalize(torch.mv(w_mat.t(), u))
            u = _l2normalize(torch.mv(w_mat, v))
            weights.append(w / u.dot(w_mat.mv(v)))
            self._cache = (key, weights, u)
        return weights[k]

    def weight_for(self, x: torch.Tensor) -> torch.Tensor:
        """``normalised_weight`` in the layout of the input ``x``: in inference a channels-last copy of the cached
        weight, made once (a convolution otherwise copies its weight into the input's layout on every call)."""
        w = self.normalised_weight()
        if w.requires_grad or not is_channels_last(x):
            return w
        if self._layout is None or self._layout[0] is not w:
            self._layout = (w, w.contiguous(memory_format=torch.channels_last))
        return self._layout[1]

    def normalised_weight(self) -> torch.Tensor:
        w = self.weight_bar
        height = w.shape[0]
        if not self.training and not self.iterate_in_eval:
            return w / self.weight_u.dot(w.reshape(height, -1).mv(self.weight_v))
        if not self.training and self._calls is not None and not torch.is_grad_enabled():
            return self._cached_weight()
        w_mat = w.detach().reshape(height, -1)
        with torch.no_grad():
            v = _l2normalize(torch.mv(w_mat.t(), self.weight_u.to(w.dtype)))
            u = _l2normalize(torch.mv(w_mat, v.to(w.dtype)))
            self.weight_u.copy_(u)
            self.weight_v.copy_(v)
        sigma = u.dot(w.reshape(height, -1).mv(v))
        return w / sigma


class SNConv2d(nn.Module):
    """A spectrally normalised ``Conv2d``; state_dict keys ``module.weight_bar/u/v``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.module = _SNWeights((out_channels, in_channels, kernel_size, kernel_size), bias)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.module.weight_for(x), self.module.bias, self.stride, self.padding)


class SNConvTranspose2d(nn.Module):
    """A spectrally normalised ``ConvTranspose2d`` (weight ``[in, out, k, k]`` as in torch)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.module = _SNWeights((in_channels, out_channels, kernel_size, kernel_size))
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.module.weight_for(x), None, self.stride, self.padding)


def sn_conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def sn_conv1x1(in_channels: int, out_channels: int) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 1)


@contextlib.contextmanager
def preserved_power_iteration(model: nn.Module) -> Iterator[None]:
    """Restore every spectral-norm ``u``/``v`` of ``model`` on exit (evaluation forwards).

    Without gradients an evaluation forward writes no ``u``/``v`` (``normalised_weight`` uses its cached weight),
    and leaving them untouched keeps that cache valid."""
    if not torch.is_grad_enabled() and not model.training:
        layers = [m for m in model.modules() if isinstance(m, _SNWeights)]
        for m in layers:
            m._calls = 0
        try:
            yield
        finally:
            for m in layers:
                m._calls = None
        return
    saved = [(m, m.weight_u.clone(), m.weight_v.clone()) for m in model.modules() if isinstance(m, _SNWeights)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, u, v in saved:
                m.weight_u.copy_(u)
                m.weight_v.copy_(v)


def batch_norm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """An evaluation batch norm as ``x * scale + shift`` per channel (to fold it into a convolution)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def conv_bn(conv: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; in inference (eval, no gradients) one convolution with the batch norm folded into its
    weights and bias, kept until the weights or statistics change (a pass over the activations fewer)."""
    if bn.training or torch.is_grad_enabled() or bn.weight is None:
        return bn(conv(x))
    if isinstance(conv, nn.Conv2d):
        weight, bias, transposed = conv.weight, conv.bias, False
        args = (conv.stride, conv.padding, conv.dilation)
    elif isinstance(conv, (SNConv2d, SNConvTranspose2d)):
        weight, bias = conv.module.normalised_weight(), conv.module.bias
        transposed = isinstance(conv, SNConvTranspose2d)
        args = (conv.stride, conv.padding)
    else:
        return bn(conv(x))
    # A spectral-norm weight made in inference mode has no version counter: it is a new tensor when recomputed.
    # The folded weight is kept in the input's layout (channels-last in inference: no copy per call).
    layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    key = tuple(None if t is None or t.is_inference() else t._version
                for t in (weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bias)) + (layout,)
    folded = bn.__dict__.get("_folded")
    if folded is None or folded[0] is not weight or folded[1] != key:
        scale, shift = batch_norm_affine(bn)
        shift = shift + (0 if bias is None else bias * scale)
        w = weight * (scale[None, :, None, None] if transposed else scale[:, None, None, None])
        folded = (weight, key, w.contiguous(memory_format=layout), shift)
        bn.__dict__["_folded"] = folded
    if transposed:
        return F.conv_transpose2d(x, folded[2], folded[3], *args)
    return F.conv2d(x, folded[2], folded[3], *args)
