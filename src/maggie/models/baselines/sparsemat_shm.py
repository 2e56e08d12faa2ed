"""SparseMat's sparse high-resolution module (reference decoder ``shm``), without spconv.

The reference runs a sparse ResNet-18 and a sparse decoder with spconv 2.x on the pixels that
the low-resolution matte leaves uncertain.  Here every sparse tensor is a dense map that is
zero outside its active set (``SiteMap``); each spconv layer becomes the dense operation
restricted to that set, which gives spconv's results exactly:

* submanifold convolution (``subm``): outputs at the active sites only, inactive inputs read
  as zero; 1x1 kernels multiply by the stored ``[out, 1, 1, in]`` tensor *reshaped* to
  ``[in, out]``, as spconv's 1x1 fast path does;
* strided convolution (k3, s2, p1): the output set is every coarse site whose window touches
  an active fine site;
* inverse convolution: the transpose of the strided convolution it is tied to, back onto
  that convolution's input set.

Weights keep spconv's ``[out, kh, kw, in]`` layout and the reference's names.  Cost follows the
image area rather than the uncertain area; that is the price of running anywhere torch runs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.baselines.sparsemat_lpn import ConvIBNormRelu
from maggie.models.ops.sparse_conv import DenseLevel, downsample_sites


class SiteConv(nn.Module):
    """One spconv layer: ``kind`` is ``subm``, ``strided`` (k3/s2/p1) or ``inverse``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, kind: str = "subm", dilation: int = 1,
                 bias: bool = False):
        super().__init__()
        self.kind, self.kernel, self.dilation = kind, kernel, dilation
        self.weight = nn.Parameter(torch.empty(cout, kernel, kernel, cin))
        fan_in = cin * kernel * kernel
        nn.init.uniform_(self.weight, -(1.0 / fan_in) ** 0.5, (1.0 / fan_in) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def _dense_weight(self) -> torch.Tensor:
        if self.kernel == 1:  # spconv's conv1x1 path: weight.view(in, out)
            cout, cin = self.weight.shape[0], self.weight.shape[-1]
            return self.weight.reshape(cin, cout).t()[:, :, None, None]
        return self.weight.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, out_active: torch.Tensor) -> torch.Tensor:
        """``x`` zero outside its set; ``out_active`` ``[B, h, w]`` the output set."""
        if self.kind == "subm":
            pad = self.dilation * (self.kernel // 2)
            y = F.conv2d(x, self._dense_weight(), self.bias, padding=pad, dilation=self.dilation)
        elif self.kind == "strided":
            y = F.conv2d(x, self._dense_weight(), self.bias, stride=2, padding=1)
        else:
            y = F.conv_transpose2d(x, self.weight.permute(3, 0, 1, 2), self.bias, stride=2, padding=1,
                                   output_padding=1)
            y = y[..., :out_active.shape[-2], :out_active.shape[-1]]
        return y * out_active[:, None].to(y.dtype)


def _bn(bn: nn.BatchNorm1d, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """spconv's ``BatchNorm1d`` over the active sites (statistics of those sites in training)."""
    return DenseLevel(active).batch_norm(bn, x)


def _masked(fn, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    return fn(x) * active[:, None].to(x.dtype)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, downsample: bool = False):
        super().__init__()
        self.stride = stride
        self.conv1 = SiteConv(cin, cout, kind="strided" if stride == 2 else "subm", dilation=dilation)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = SiteConv(cout, cout, bias=True)
        self.bn2 = nn.BatchNorm1d(cout)
        if downsample:
            self.downsample = nn.ModuleList([SiteConv(cin, cout, kind="strided" if stride == 2 else "subm"),
                                             nn.BatchNorm1d(cout)])
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_active = downsample_sites(active) if self.stride == 2 else active
        out = _masked(F.relu, _bn(self.bn1, self.conv1(x, out_active), out_active), out_active)
        out = _bn(self.bn2, self.conv2(out, out_active), out_active)
        residual = x
        if self.downsample is not None:
            conv, bn = self.downsample
            residual = _bn(bn, conv(x, out_active), out_active)
        return _masked(F.relu, out + residual, out_active), out_active


class SparseResNet18(nn.Module):
    """Stem to OS2, then four stages (OS4, OS8, OS8, OS8 dilated); returns the five feature maps."""

    def __init__(self, inc: int = 4):
        super().__init__()
        self.conv1 = SiteConv(inc, 64)
        self.bn1 = nn.BatchNorm1d(64)
        self.conv2 = SiteConv(64, 64, kind="strided")
        self.bn2 = nn.BatchNorm1d(64)
        self.conv3 = SiteConv(64, 64)
        self.bn3 = nn.BatchNorm1d(64)
        self.layer1 = nn.ModuleList([BasicBlock(64, 64, 2, downsample=True), BasicBlock(64, 64)])
        self.layer2 = nn.ModuleList([BasicBlock(64, 128, 2, downsample=True), BasicBlock(128, 128)])
        self.layer3 = nn.ModuleList([BasicBlock(128, 256, 1, downsample=True), BasicBlock(256, 256)])
        self.layer4 = nn.ModuleList([BasicBlock(256, 512, 1, dilation=2, downsample=True), BasicBlock(512, 512)])

    def forward(self, x: torch.Tensor, active: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(features, active sets) at OS2, OS4, OS8, OS8, OS8; ``active`` is the full-resolution set."""
        relu = F.relu
        x = _masked(relu, _bn(self.bn1, self.conv1(x, active), active), active)
        active = downsample_sites(active)
        x = _masked(relu, _bn(self.bn2, self.conv2(x, active), active), active)
        x = _masked(relu, _bn(self.bn3, self.conv3(x, active), active), active)
        feats, sets = [x], [active]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x, active = block(x, active)
            feats.append(x)
            sets.append(active)
        return feats, sets


class SparseCAM(nn.Module):
    """Context gate: fg/bg-pooled low-resolution features -> one weight per channel of the OS8 features."""

    def __init__(self, local_channels: int = 512, global_channels: int = 32):
        super().__init__()
        self.conv_f = ConvIBNormRelu(global_channels, global_channels, 1, ibn=False)
        self.conv_b = ConvIBNormRelu(global_channels, global_channels, 1, ibn=False)
        self.conv_g = ConvIBNormRelu(2 * global_channels, local_channels, 1, ibn=False, relu=False)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Per-item gate ``[B, C]`` from ``ctx`` ``[B, 32, h, w]`` and the low-resolution matte."""
        m = F.interpolate(alpha, ctx.shape[-2:], mode="bilinear", align_corners=False)
        fg = self.conv_f((ctx * m).mean((2, 3), keepdim=True))
        bg = self.conv_b((ctx * (1 - m)).mean((2, 3), keepdim=True))
        return torch.sigmoid(self.conv_g(torch.cat([fg, bg], 1)))[:, :, 0, 0]


class _UpBlock(nn.ModuleList):
    """``SparseSequential(inverse conv, BatchNorm1d, LeakyReLU)``."""

    def __init__(self, cin: int, cout: int):
        super().__init__([SiteConv(cin, cout, kind="inverse", bias=True), nn.BatchNorm1d(cout)])

    def run(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        conv, bn = self
        return _masked(F.leaky_relu, _bn(bn, conv(x, active), active), active)


class SparseDecoder(nn.Module):
    """Inverse convolutions back to full resolution with shortcuts; mattes at OS4, OS2, OS1, OS1."""

    def __init__(self, inc: int = 512):
        super().__init__()
        self.conv_up1 = _UpBlock(inc, 256)
        self.conv_up2 = _UpBlock(256 + 64, 256)
        self.conv_up3 = _UpBlock(256 + 64, 64)
        self.conv_up4_alpha = nn.ModuleList([SiteConv(64 + 3, 32, bias=True), nn.LeakyReLU(),
                                             SiteConv(32, 16, bias=True), nn.LeakyReLU(), SiteConv(16, 1, 1)])
        self.conv_p8x = SiteConv(256, 1, 1)
        self.conv_p4x = SiteConv(256, 1, 1)
        self.conv_p2x = SiteConv(64, 1, 1)

    def forward(self, img: torch.Tensor, feats: list[torch.Tensor], sets: list[torch.Tensor],
                active: torch.Tensor) -> list[torch.Tensor]:
        """``img``: the SHM input at full resolution; returns sigmoid mattes, zero outside their sets."""
        x1, x2, _, _, x5 = feats
        s1, s2 = sets[0], sets[1]
        dec4x = self.conv_up1.run(x5, s2)
        p4x = self.conv_p8x(dec4x, s2)
        dec2x = self.conv_up2.run(torch.cat((dec4x, x2), 1), s1)
        p2x = self.conv_p4x(dec2x, s1)
        dec1x = self.conv_up3.run(torch.cat((dec2x, x1), 1), active)
        p1x = self.conv_p2x(dec1x, active)
        y = torch.cat((dec1x, (img[:, :3] * 0.5 + 0.5) * active[:, None].to(img.dtype)), 1)
        for layer in self.conv_up4_alpha:
            y = layer(y, active) if isinstance(layer, SiteConv) else _masked(layer, y, active)
        return [_masked(torch.sigmoid, p, s) for p, s in ((p4x, s2), (p2x, s1), (p1x, active), (y, active))]


class SHM(nn.Module):
    def __init__(self, inc: int = 4):
        super().__init__()
        self.ctx = SparseCAM(512, 32)
        self.backbone = SparseResNet18(inc)
        self.decoder = SparseDecoder()

    def forward(self, x: torch.Tensor, active: torch.Tensor, ctx: torch.Tensor, gate_alpha: torch.Tensor
                ) -> list[torch.Tensor]:
        """``x`` ``[B, 4, H, W]`` (RGB, 2*alpha-1), ``active`` ``[B, H, W]`` -> four mattes (OS4, OS2, OS1, OS1).

        ``gate_alpha`` is the low-resolution matte the context gate pools with, one per item."""
        x = x * active[:, None].to(x.dtype)
        feats, sets = self.backbone(x, active)
        feats[-1] = feats[-1] * self.ctx(feats[-1], ctx, gate_alpha)[:, :, None, None]
        return self.decoder(x, feats, sets, active)
