"""MGM baselines of the paper: Mask-Guided Matting and MGM* (reference archs ``MGM_SingInst`` and
``MaGGIe`` with encoder ``res_shortcut_29`` + decoder ``res_shortcut_22``).

* ``mgm``: RGB + one mask in, one matte out; trained on one instance, run once per instance.
* ``mgm_stacked`` (MGM*): RGB + the masks of up to 10 instances stacked as channels (no ID
  embedding), 10 mattes out in one pass.

Both decode densely to OS8, OS4 and OS1 heads and fuse them progressively: OS4 replaces OS8
around OS8's uncertain pixels, OS1 replaces the result around its remaining uncertainty (the
reference's ``MaGGIe.fuse``: dilation by 15x15 and 7x7 ellipses at evaluation, random sizes in
training).  The state dict keeps the reference's key names, so its checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.maggie.aspp import ASPP
from maggie.models.maggie.encoder import ShortcutEncoder
from maggie.models.maggie.network import check_inputs
from maggie.models.ops.blocks import head, make_decoder_layer, to_alpha, xavier_init
from maggie.models.ops.morphology import compute_unknown
from maggie.models.ops.spectral_norm import SNConvTranspose2d, preserved_power_iteration

MGM_ARCHS = ("mgm", "mgm_stacked")


@dataclass
class MGMConfig:
    arch: str = "mgm"  # mgm | mgm_stacked | mgm_tcvom | mgm_stacked_tcvom (the last two: models/tcvom.py)
    max_inst: int = 10  # stacked variants: mask channels and output slots

    @property
    def slots(self) -> int:
        return 1 if self.arch in ("mgm", "mgm_tcvom") else self.max_inst

    def to_dict(self) -> dict:
        return asdict(self)


class MGMDecoder(nn.Module):
    """``res_shortcut_22``: four upsampling stages with encoder shortcuts and OS8/OS4/OS1 heads."""

    def __init__(self, out_channels: int, layers: tuple[int, int, int, int] = (2, 3, 3, 2),
                 return_feature: bool = False):
        super().__init__()
        self.return_feature = return_feature  # InstMatt's refiner reads the OS1 features
        self.layer1 = make_decoder_layer(512, 256, layers[0])
        self.layer2 = make_decoder_layer(256, 128, layers[1])
        self.layer3 = make_decoder_layer(128, 64, layers[2])
        self.layer4 = make_decoder_layer(64, 32, layers[3])
        self.conv1 = SNConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.refine_OS1 = head(32, out_channels)
        self.refine_OS4 = head(64, out_channels)
        self.refine_OS8 = head(128, out_channels)

    def forward(self, x: torch.Tensor, shortcuts: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        fea1, fea2, fea3, fea4, fea5 = shortcuts
        x = self.layer2(self.layer1(x) + fea5) + fea4
        return self.heads(x, fea1, fea2, fea3)

    def heads(self, x: torch.Tensor, fea1: torch.Tensor, fea2: torch.Tensor, fea3: torch.Tensor
              ) -> dict[str, torch.Tensor]:
        """From the OS8 features on: the OS8 head, two more stages with their heads, all as mattes."""
        os8 = self.refine_OS8(x)
        x = self.layer3(x) + fea3
        os4 = self.refine_OS4(x)
        x = self.layer4(x) + fea2
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.2) + fea1
        os1 = self.refine_OS1(x)
        os4 = F.interpolate(os4, scale_factor=4.0, mode="bilinear", align_corners=False)
        os8 = F.interpolate(os8, scale_factor=8.0, mode="bilinear", align_corners=False)
        out = {"alpha_os8": to_alpha(os8), "alpha_os4": to_alpha(os4), "alpha_os1": to_alpha(os1)}
        if self.return_feature:
            out["feature"] = x
        return out


def progressive_fuse(out: dict[str, torch.Tensor], train: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, weight_os4, weight_os1): OS4 around OS8's uncertainty, then OS1 around what remains."""
    alpha = out["alpha_os8"].clone()
    w4 = compute_unknown(alpha, 30, train=train)
    alpha = torch.where(w4 > 0, out["alpha_os4"], alpha)
    w1 = compute_unknown(alpha, 15, train=train)
    alpha = torch.where(w1 > 0, out["alpha_os1"], alpha)
    return alpha, w4, w1


class MGM(nn.Module):
    archs = MGM_ARCHS
    decoder_cls = MGMDecoder

    def __init__(self, cfg: MGMConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MGMConfig(arch=self.archs[0])
        if cfg.arch not in self.archs:
            raise ValueError(f"unknown {type(self).__name__} arch {cfg.arch!r}; expected one of {self.archs}")
        self.encoder = ShortcutEncoder(num_mask=cfg.slots, num_embed=0)
        self.aspp = ASPP(512, 512)
        self.decoder = self.decoder_cls(cfg.slots)
        xavier_init(self.aspp, self.decoder)

    is_video = False

    def group_pass(self, image: torch.Tensor, mask: torch.Tensor, state=None) -> dict[str, torch.Tensor]:
        """One pass: image ``[B, T, 3, H, W]``, mask ``[B, T, slots, H, W]`` -> outputs ``[B, T, slots, H, W]``.

        MGM treats the frames independently; TCVOM overrides this with its clip pass."""
        b, t = image.shape[:2]
        feats, mid = self.encoder(image.flatten(0, 1), mask.flatten(0, 1))
        out = self.decoder(self.aspp(feats), mid["shortcut"])
        alpha, w4, w1 = progressive_fuse(out, train=self.training)
        out["alpha"] = alpha
        if self.training:
            out.update(weight_os4=w4, weight_os1=w1)
        return {k: v.reshape(b, t, *v.shape[1:]) for k, v in out.items()}

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prev_alpha: torch.Tensor | None = None,
                state=None) -> dict[str, torch.Tensor]:
        """image ``[B, T, 3, H, W]``, mask ``[B, T, N, H', W']`` -> mattes ``[B, T, N, H, W]``.

        MGM runs once per instance; MGM* in groups of ``max_inst`` (empty slots padded).  In training
        the masks come in the network's slots already (``N == slots``)."""
        mask = check_inputs(image, mask)
        n, slots = mask.shape[2], self.cfg.slots
        if self.training:
            if n != slots:
                raise ValueError(f"{self.cfg.arch} trains on {slots} mask slot(s), got {n}")
            return self.group_pass(image, mask, state)
        # As in the reference, the passes run one after the other, each advancing the spectral
        # norms' power iteration; the state is restored afterwards, so calls are repeatable.
        outs = []
        with preserved_power_iteration(self):
            for i in range(0, n, slots):
                group = mask[:, :, i:i + slots]
                pad = slots - group.shape[2]
                if pad:
                    group = F.pad(group, (0, 0, 0, 0, 0, pad))
                outs.append({k: v[:, :, :slots - pad] for k, v in self.group_pass(image, group).items()})
        return {k: torch.cat([o[k] for o in outs], dim=2) for k in outs[0]}
