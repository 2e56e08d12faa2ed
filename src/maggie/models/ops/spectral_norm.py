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

    def normalised_weight(self) -> torch.Tensor:
        w = self.weight_bar
        height = w.shape[0]
        if not self.training and not self.iterate_in_eval:
            return w / self.weight_u.dot(w.reshape(height, -1).mv(self.weight_v))
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
        return F.conv2d(x, self.module.normalised_weight(), self.module.bias, self.stride, self.padding)


class SNConvTranspose2d(nn.Module):
    """A spectrally normalised ``ConvTranspose2d`` (weight ``[in, out, k, k]`` as in torch)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.module = _SNWeights((in_channels, out_channels, kernel_size, kernel_size))
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.module.normalised_weight(), None, self.stride, self.padding)


def sn_conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def sn_conv1x1(in_channels: int, out_channels: int) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 1)


@contextlib.contextmanager
def preserved_power_iteration(model: nn.Module) -> Iterator[None]:
    """Restore every spectral-norm ``u``/``v`` of ``model`` on exit (evaluation forwards)."""
    saved = [(m, m.weight_u.clone(), m.weight_v.clone()) for m in model.modules() if isinstance(m, _SNWeights)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, u, v in saved:
                m.weight_u.copy_(u)
                m.weight_v.copy_(v)
