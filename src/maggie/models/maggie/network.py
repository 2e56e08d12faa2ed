"""The MaGGIe image and video networks (reference archs ``MaGGIe`` and ``MaGGIe_Temp``).

Input: the normalised image ``[B, T, 3, H, W]`` (H, W multiples of 32) and binary guidance
masks ``[B, T, N, H', W']`` (full or OS8 resolution).  All instances are decoded in one
forward pass; more than ``max_inst`` (10) instances are processed in groups of 10, which
leaves results for <= 10 instances unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from maggie.models.maggie.aspp import ASPP
from maggie.models.maggie.decoder import DecoderState, MaggieDecoder, MaggieTemporalDecoder
from maggie.models.maggie.encoder import ShortcutEncoder
from maggie.models.ops.blocks import xavier_init
from maggie.models.ops.reductions import has_nonzero
from maggie.models.ops.spectral_norm import preserved_power_iteration

ARCHS = ("maggie_image", "maggie_video")
# How the refinement runs: on the tiles holding uncertain pixels (tiles), per site with neighbour gathers
# (rulebook, spconv's scheme), whichever suits the region (sparse: tiles where the uncertain pixels fill
# them, else per site), or on full masked maps (dense: for export); all compute the same function.
REFINE_MODES = ("sparse", "tiles", "rulebook", "dense")


@dataclass
class MaggieConfig:
    arch: str = "maggie_image"
    max_inst: int = 10
    num_embed: int = 3
    atten_dim: int = 128
    atten_blocks: int = 2
    atten_heads: int = 1
    final_channel: int = 64
    warmup_detail_iter: int = 3000
    refine_mode: str = "sparse"  # one of REFINE_MODES: sparse (cost follows the uncertain area), rulebook, dense
    # Initialisation aids for training from scratch (no effect on loaded weights):
    routing_init: bool = False  # IMD q/k projections start equal, so the ID embedding routes pixels to their token
    guidance_stem_init: bool = False  # the stem reads the guidance channels from the start

    def to_dict(self) -> dict:
        return asdict(self)


class MaGGIe(nn.Module):
    def __init__(self, cfg: MaggieConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MaggieConfig()
        if cfg.arch not in ARCHS:
            raise ValueError(f"unknown MaGGIe arch {cfg.arch!r}; expected one of {ARCHS}")
        self.encoder = ShortcutEncoder(num_mask=cfg.max_inst, num_embed=cfg.num_embed)
        self.aspp = ASPP(512, 512)
        decoder_cls = MaggieTemporalDecoder if cfg.arch == "maggie_video" else MaggieDecoder
        self.decoder = decoder_cls(max_inst=cfg.max_inst, atten_dim=cfg.atten_dim, atten_blocks=cfg.atten_blocks,
                                   atten_heads=cfg.atten_heads, final_channel=cfg.final_channel,
                                   warmup_detail_iter=cfg.warmup_detail_iter, refine_mode=cfg.refine_mode)
        xavier_init(self.aspp, self.decoder)
        # Training from scratch (no pretrained encoder): with unit LayerNorm gain the OS8 logits
        # (a 64-d dot product) start at |x| ~ 10, deep in tanh's saturation, and the first steps
        # push every pixel to alpha 0, where no gradient reaches the foreground any more.  A
        # 1/sqrt(64) gain starts them at |x| ~ 1.  Initialisation only: loaded weights replace it.
        nn.init.constant_(self.decoder.refine_OS8.decoder_norm.weight, cfg.final_channel ** -0.5)
        # The ID embedding routes every pixel to its instance's token in the attention; with the
        # reference's xavier init its match score is ~0.15 (attention nearly uniform), which a
        # pretrained, 52k-step run can afford to grow slowly and a short run from scratch cannot.
        nn.init.normal_(self.decoder.refine_OS8.id_embedding.weight, std=1.0)
        if cfg.routing_init:
            share_query_key_init(self.decoder.refine_OS8)
        if cfg.guidance_stem_init:
            w = self.encoder.conv1.module.weight_bar
            with torch.no_grad():
                w[:, 3:] = torch.randn_like(w[:, 3:]) * w[:, :3].std() * 3

    @property
    def is_video(self) -> bool:
        return self.cfg.arch == "maggie_video"

    def set_refine_mode(self, mode: str) -> None:
        if mode not in REFINE_MODES:
            raise ValueError(f"refine mode must be one of {', '.join(REFINE_MODES)}, got {mode!r}")
        self.decoder.refine_mode = mode

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prev_alpha: torch.Tensor | None = None,
                state: DecoderState | None = None) -> dict[str, torch.Tensor]:
        """Mattes for every instance of every frame; see the module docstring for shapes.

        prev_alpha ``[B, N, H, W]``: the final matte of the frame before the clip (video
        inference over sliding clips); state: training-time iteration and true alpha.
        """
        mask = check_inputs(image, mask)
        if self.training:
            return self._forward(image, mask, prev_alpha, state)
        with preserved_power_iteration(self):
            return self._forward(image, mask, prev_alpha, state)

    def _forward(self, image, mask, prev_alpha, state):
        t = image.shape[1]
        n = mask.shape[2]
        if self.training or n <= self.cfg.max_inst:
            out = self._forward_group(image, mask, state)
        else:
            groups = []
            for i in range(0, n, self.cfg.max_inst):
                # Each group sees the checkpoint's power-iteration state, as a lone forward would.
                with preserved_power_iteration(self):
                    groups.append(self._forward_group(image, mask[:, :, i:i + self.cfg.max_inst], None))
            out = {k: torch.cat([g[k] for g in groups], dim=2) for k in groups[0] if k not in ("loss_atten",)}
        if self.is_video and not self.training and t > 1:
            out["alpha"] = fuse_clip(out["alpha"], out["diff_forward"], out["diff_backward"], prev_alpha)
        return out

    def _forward_group(self, image, mask, state):
        b, t, _, h, w = image.shape
        n = mask.shape[2]
        if not self.training and not has_nonzero(mask):
            zeros = image.new_zeros(b, t, n, h, w)
            out = {k: zeros.clone() for k in ("alpha", "alpha_os8", "alpha_os4", "alpha_os1", "detail_mask")}
            if self.is_video:
                out.update(temp_alpha=zeros.clone(), diff_forward=zeros.clone(), diff_backward=zeros.clone())
            return out
        enc_mask = mask.flatten(0, 1)
        if enc_mask.shape[1] < self.cfg.max_inst and self.cfg.num_embed == 0:
            enc_mask = F.pad(enc_mask, (0, 0, 0, 0, 0, self.cfg.max_inst - enc_mask.shape[1]))
        # Evaluating the tiled refinement, the OS1..OS4 shortcut branches (read only by it) run on its tiles.
        lazy = 3 if not self.training and self.decoder.refine_mode != "dense" and not torch.onnx.is_in_onnx_export() \
            else 0
        feats, mid = self.encoder(image.flatten(0, 1), enc_mask, lazy=lazy)
        feats = self.aspp(feats)
        dec = self.decoder(feats, mid, b, t, mask, state)
        out = {}
        for k in ("alpha", "alpha_os8", "alpha_os4", "alpha_os1", "detail_mask"):
            out[k] = dec[k].reshape(b, t, -1, h, w)
        if self.training:
            out["weight_os4"] = dec["weight_os4"].reshape(b, t, -1, h, w)
            out["weight_os1"] = dec["weight_os1"].reshape(b, t, -1, h, w)
            out["logits_os8"] = dec["logits_os8"].reshape(b, t, -1, *dec["logits_os8"].shape[-2:])
            if dec.get("loss_atten") is not None:
                out["loss_atten"] = dec["loss_atten"]
        if self.is_video:
            nn_ = out["alpha"].shape[2]
            out["temp_alpha"] = dec["temp_alpha"]
            out["diff_forward_logits"] = dec["diff_forward_logits"]
            out["diff_backward_logits"] = dec["diff_backward_logits"]
            out["diff_forward"] = dec["diff_forward_logits"].sigmoid().expand(-1, -1, nn_, -1, -1)
            out["diff_backward"] = dec["diff_backward_logits"].sigmoid().expand(-1, -1, nn_, -1, -1)
        return out


def share_query_key_init(imd: nn.Module) -> None:
    """Start the query and key projections of every IMD cross-attention as one orthogonal matrix.

    The ID embedding is added to pixels and tokens before those projections; with independent
    random projections a pixel's match with its own token is no stronger than with any other
    (measured: ~0.75 of the attention on the own token, unchanged after 200 steps), with equal
    ones it is the largest from step 0 (1.00).
    """
    layers = [*imd.token_feat_ca_layers, *imd.feat_token_ca_layers, imd.final_token_feat_ca]
    for layer in layers:
        attn = layer.multihead_attn
        d = attn.embed_dim
        q = nn.init.orthogonal_(torch.empty(d, d))
        with torch.no_grad():
            attn.in_proj_weight[:d].copy_(q)
            attn.in_proj_weight[d:2 * d].copy_(q)


def check_inputs(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Refuse badly shaped inputs with a clear message; return the masks at the image's size (nearest)."""
    if image.dim() != 5 or mask.dim() != 5:
        raise ValueError(f"expected image [B,T,3,H,W] and mask [B,T,N,H,W], got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    b, t, _, h, w = image.shape
    if h % 32 or w % 32:
        raise ValueError(f"image height and width must be multiples of 32, got {h}x{w}")
    if mask.shape[-2:] != (h, w):
        mask = F.interpolate(mask.flatten(0, 1), size=(h, w), mode="nearest").reshape(b, t, -1, h, w)
    return mask


def fuse_clip(alpha: torch.Tensor, diff_forward: torch.Tensor, diff_backward: torch.Tensor,
              prev_alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Test-time matte fusion of a clip, exactly as the reference's ``MaGGIe_Temp.forward`` does it.

    The reference's post-processing is written for its 3-frame test clips and only ever touches
    frames 1 and 2, whatever the clip length T: frame 1 keeps the previous frame's final value
    (``prev_alpha``, else frame 0) where the forward change map says nothing changed, unless the
    backward propagation from the clip's *last* frame disagrees, where the network's own frame 1
    is used; frame 2 is then propagated forward from the new frame 1 towards the last frame.  For
    T == 3 this is the bi-fusion of the paper.  For T > 3 frames 3.. stay as predicted and frame 2
    mixes in the last frame (the reference's indexing, kept so that eval outputs stay equal; the
    streamed predictor uses 3-frame clips, where it is the paper's fusion).  The reference fails
    on T < 3 (it indexes frame 2); here those clips come back unfused, which is what its
    arithmetic gives for frame 1 of a 2-frame clip (its backward change map there is the padding
    zero, so the backward value is frame 1 itself).
    """
    t = alpha.shape[1]
    if t < 3:
        return alpha
    df = (diff_forward > 0.5).to(alpha.dtype)
    db = (diff_backward > 0.5).to(alpha.dtype)
    prev = alpha[:, 0] if prev_alpha is None else prev_alpha.to(alpha)
    last = alpha[:, -1]
    fwd = prev * (1 - df[:, 1]) + alpha[:, 1] * df[:, 1]
    bwd = last * (1 - db[:, 1]) + alpha[:, 1] * db[:, 1]
    mid = torch.where((fwd - bwd).abs() > 0, alpha[:, 1], fwd)
    nxt = mid * (1 - df[:, 2]) + last * df[:, 2]
    return torch.cat([alpha[:, :1], mid[:, None], nxt[:, None], alpha[:, 3:]], dim=1)
