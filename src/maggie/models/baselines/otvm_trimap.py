"""OTVM's trimap propagation network: STM (space-time memory, Oh et al. 2019) as the authors use it
(``models/trimap/STM.py``, ``models/trimap/model.py``), key layout ``trimap.model.*``.

A frame is *memorised* from its RGB and its trimap (stages 3-4 also its alpha and the alpha
network's hidden features) into a key (128 ch) and a value (512 ch) at 1/16 resolution; a query
frame *reads* the memory with softmax attention over every memorised location and decodes the
read-out into 3-class trimap logits (background, unknown, foreground) at full resolution.

Memory tensors are ``[B, C, T, h, w]`` (the authors' extra object axis, always 1, is dropped).
Frames must be padded to multiples of 16 (the OTVM loop pads to 32).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from maggie.models.baselines.otvm_backbones import IMAGENET_MEAN, IMAGENET_STD, STMEncoder


class ConstantBuffers(nn.Module):
    """Holds buffers that the authors' loss modules put in the state dict (``LAPLOSS.KERNEL``,
    ``trimap.LOSS.weight``), so their checkpoints load strictly; the port does not read them."""

    def __init__(self, **buffers: Tensor) -> None:
        super().__init__()
        for k, v in buffers.items():
            self.register_buffer(k, v)


class ResBlock(nn.Module):
    """STM's pre-activation residual block (no norm; 3x3 projection when shapes change)."""

    def __init__(self, cin: int, cout: int | None = None, stride: int = 1) -> None:
        super().__init__()
        cout = cin if cout is None else cout
        self.downsample = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        return (x if self.downsample is None else self.downsample(x)) + r


class KeyValue(nn.Module):
    def __init__(self, cin: int, keydim: int, valdim: int) -> None:
        super().__init__()
        self.Key = nn.Conv2d(cin, keydim, 3, padding=1)
        self.Value = nn.Conv2d(cin, valdim, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.Key(x), self.Value(x)


class Refine(nn.Module):
    """Skip features + x2 bilinear upsampling of the coarser decoder features."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.convFS = nn.Conv2d(cin, c, 3, padding=1)
        self.ResFS = ResBlock(c, c)
        self.ResMM = ResBlock(c, c)

    def forward(self, f: Tensor, pm: Tensor) -> Tensor:
        s = self.ResFS(self.convFS(f))
        return self.ResMM(s + F.interpolate(pm, scale_factor=2, mode="bilinear", align_corners=False))


class STMDecoder(nn.Module):
    """Stride-16 memory readout -> 3-class trimap logits at full resolution."""

    def __init__(self, c: int = 256) -> None:
        super().__init__()
        self.convFM = nn.Conv2d(1024, c, 3, padding=1)
        self.ResMM = ResBlock(c, c)
        self.RF3 = Refine(512, c)
        self.RF2 = Refine(256, c)
        self.pred = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, r4: Tensor, r3: Tensor, r2: Tensor) -> Tensor:
        m4 = self.ResMM(self.convFM(r4))
        m2 = self.RF2(r2, self.RF3(r3, m4))
        p2 = self.pred(F.relu(m2))
        return F.interpolate(p2, scale_factor=4, mode="bilinear", align_corners=False)


class STM(nn.Module):
    """Space-time memory network used as the trimap propagator (``models/trimap/STM.py``)."""

    def __init__(self, hdim: int = -1) -> None:
        super().__init__()
        self.hdim = hdim
        self.Encoder_M = STMEncoder(memory=True, hdim=hdim)
        self.Encoder_Q = STMEncoder(memory=False)
        self.KV_M_r4 = KeyValue(1024, 128, 512)
        self.KV_Q_r4 = KeyValue(1024, 128, 512)
        self.Decoder = STMDecoder(256)

    def memorize(self, img: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Key ``[B, 128, 1, h, w]`` and value ``[B, 512, 1, h, w]`` of one frame; ``masks`` =
        [bg, unknown, fg(, alpha, hid x hdim)] channels at the frame's resolution (multiple of 16)."""
        r4, _, _ = self.Encoder_M(img, masks[:, 1:])
        k, v = self.KV_M_r4(r4)
        return k.unsqueeze(2), v.unsqueeze(2)

    @staticmethod
    def read(m_key: Tensor, m_val: Tensor, q_key: Tensor, q_val: Tensor) -> Tensor:
        """Softmax attention of every query location over all memory locations (T*h*w), scaled by
        1/sqrt(key dim); the read value is concatenated with the query's own value."""
        b, dk, t, h, w = m_key.shape
        dv = m_val.shape[1]
        mi = m_key.reshape(b, dk, t * h * w).transpose(1, 2)
        p = torch.bmm(mi, q_key.reshape(b, dk, h * w)) / math.sqrt(dk)
        p = F.softmax(p, dim=1)
        mem = torch.bmm(m_val.reshape(b, dv, t * h * w), p).view(b, dv, h, w)
        return torch.cat([mem, q_val], dim=1)

    def segment(self, img: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Trimap logits ``[B, 3, H, W]`` (bg, unknown, fg) of a query frame from the memory."""
        r4, r3, r2 = self.Encoder_Q(img)
        k4, v4 = self.KV_Q_r4(r4)
        return self.Decoder(self.read(keys, values, k4, v4), r3, r2)


class TrimapNet(nn.Module):
    """Wrapper with the authors' ``trimap.*`` key layout (``models/trimap/model.py``)."""

    def __init__(self, hdim: int = -1) -> None:
        super().__init__()
        self.register_buffer("IMG_MEAN", torch.tensor(IMAGENET_MEAN).reshape(1, 1, 3, 1, 1))
        self.register_buffer("IMG_STD", torch.tensor(IMAGENET_STD).reshape(1, 1, 3, 1, 1))
        self.model = STM(hdim=hdim)
        self.LOSS = ConstantBuffers(weight=torch.ones(3))
