"""Conv-GRU over OS8 pixel features, run forward and then backward over a clip."""

from __future__ import annotations

import torch
from torch import nn


class ConvGRU(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, kernel_size, padding=padding), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, kernel_size, padding=padding), nn.Tanh())

    def step(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * c

    def run(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        """x ``[B, T, C, h, w]`` -> hidden states ``[B, T, C, h, w]``."""
        if h is None:
            h = x.new_zeros(x.shape[0], *x.shape[2:])
        states = []
        for xt in x.unbind(1):
            h = self.step(xt, h)
            states.append(h)
        return torch.stack(states, dim=1)

    def bidirectional(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass over the clip, then backward from the last state; frames but the last
        take the mean of both directions (the reference's ``temp_method='bi'``)."""
        fwd = self.run(x, h0)
        if x.shape[1] == 1:
            return fwd, fwd
        bwd = self.run(torch.flip(x[:, :-1], dims=(1,)), fwd[:, -1]).flip(1)
        out = torch.cat([(fwd[:, :-1] + bwd) / 2, fwd[:, -1:]], dim=1)
        return out, fwd
