"""Instance matte decoder (IMD) at OS8: instance tokens attend to the pixels of all frames.

Each of ``max_inst`` learned tokens carries one instance slot; an ID embedding is the
positional code of both the tokens (slot i) and the pixels (the largest slot id whose
guidance mask covers the OS8 cell).  After the attention blocks every token becomes a
dynamic 1x1 kernel; its dot product with the OS8 pixel features is that instance's
OS8 matte logit.  Post-norm, one head, no dropout, as in the reference configuration.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class CrossAttentionLayer(nn.Module):
    """Post-norm cross attention; returns the (head-averaged) attention map too."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, query, memory, query_pos, memory_pos, key_padding_mask=None, need_weights: bool = True):
        """``need_weights=False`` (no attention loss): the map is not returned (None) and torch runs its fused
        attention, not the explicit softmax and batched products (on a CPU those meet denormal attention weights
        that fall to the slow path: with ten people at 576 x 1024 the IMD's products took 11 ms instead of 3)."""
        out, attn = self.multihead_attn(query + query_pos, memory + memory_pos, memory,
                                        key_padding_mask=key_padding_mask, need_weights=need_weights)
        return self.norm(query + out), attn


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, pos, key_padding_mask=None):
        q = x + pos
        out = self.self_attn(q, q, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.norm(x + out)


class FFNLayer(nn.Module):
    """Post-norm residual MLP (``linear1 -> ReLU -> linear2``) with optional dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm(x + self.dropout(y))


class MLP(nn.Module):
    """Single linear layer kept in a ``layers`` list so that the official keys match."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, out_dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[0](x)


def masks_to_os8(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Binary masks ``[..., H, W]`` -> OS8 cells that contain any mask pixel (average pool > 0)."""
    shape = masks.shape
    stride = shape[-1] // size[1]
    pooled = F.avg_pool2d(masks.reshape(-1, 1, *shape[-2:]).float(), stride, stride)
    return (pooled > 0).to(masks.dtype).reshape(*shape[:-2], *pooled.shape[-2:])


class InstanceMatteDecoder(nn.Module):
    def __init__(self, input_dim: int = 128, dim: int = 128, blocks: int = 2, heads: int = 1,
                 output_dim: int = 64, max_inst: int = 10):
        super().__init__()
        self.blocks = blocks
        self.max_inst = max_inst
        self.feat_proj = MLP(input_dim, dim)
        self.sa_layers = nn.ModuleList(SelfAttentionLayer(dim, heads) for _ in range(blocks))
        self.token_feat_ca_layers = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(blocks))
        self.mlp_layers = nn.ModuleList(FFNLayer(dim, dim) for _ in range(blocks))
        self.feat_token_ca_layers = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(blocks))
        self.final_token_feat_ca = CrossAttentionLayer(dim, heads)
        self.final_mlp = MLP(dim, output_dim)
        self.decoder_norm = nn.LayerNorm(output_dim)
        self.query_feat = nn.Embedding(max_inst, dim)
        self.id_embedding = nn.Embedding(max_inst + 1, dim)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(dim),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim, output_dim, 1, bias=False),
            nn.BatchNorm2d(output_dim),
            nn.LeakyReLU(0.2),
        )

    def forward(
        self,
        feat: torch.Tensor,
        masks: torch.Tensor,
        gt_masks: torch.Tensor | None = None,
        temporal: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """feat ``[B*T, C, h, w]`` (OS8), masks ``[B, T, n, H, W]`` binary guidance.

        ``gt_masks`` (``[B, T, max_inst, H, W]``, training only) switches on the attention loss.
        ``temporal`` maps pixel features ``[B, T, C, h, w]`` to temporally aggregated ones (video).
        Returns ``logits`` ``[B*T, max_inst, h, w]``, ``feat`` (non-temporal OS8 features, ``[B*T, 64, h, w]``),
        ``kernels`` ``[B, max_inst, 64]`` and, with ``gt_masks``, ``loss_atten``.
        """
        b, t, n = masks.shape[:3]
        h, w = feat.shape[-2:]
        m8 = masks_to_os8(masks, (h, w))  # [B, T, n, h, w]

        # Pixel positions: embedding of the largest slot id covering each OS8 cell.
        ids = torch.arange(1, n + 1, device=masks.device)[None, None, :, None, None]
        pix_ids = (m8 * ids).amax(2).long()  # [B, T, h, w]
        pix_pos = self.id_embedding(pix_ids)  # [B, T, h, w, C]
        # Sequence order: pixel-major, then frame (as the reference flattens it).
        pix_pos = pix_pos.permute(2, 3, 1, 0, 4).reshape(h * w * t, b, -1)
        pix = feat.reshape(b, t, -1, h * w).permute(3, 1, 0, 2).reshape(h * w * t, b, -1)
        pix = self.feat_proj(pix)

        tokens = self.query_feat.weight[:, None].expand(-1, b, -1)
        token_ids = torch.arange(1, self.max_inst + 1, device=feat.device)
        token_pos = self.id_embedding(token_ids)[:, None].expand(-1, b, -1)

        valid = m8.sum((1, 3, 4)) > 0  # [B, n]
        if n < self.max_inst:
            valid = torch.cat([valid, valid.new_zeros(b, self.max_inst - n)], dim=1)
        # A clip with no guidance at all would mask every key (NaN attention); let its tokens
        # attend freely instead: its mattes are zeroed by the validity masks anyway.
        token_padding = ~valid & valid.any(1, keepdim=True)

        guidance = None
        if gt_masks is not None:
            g8 = F.max_pool2d(gt_masks.flatten(0, 2)[:, None].float(), masks.shape[-1] // w)
            g8 = g8.reshape(b, t, self.max_inst, h * w) > 0
            guidance = g8.permute(0, 2, 3, 1).reshape(b, self.max_inst, h * w * t).float()
        attn_maps = []
        maps = guidance is not None  # the token-to-pixel maps are read only by the attention loss

        for i in range(self.blocks):
            tokens, attn = self.token_feat_ca_layers[i](tokens, pix, token_pos, pix_pos, need_weights=maps)
            attn_maps.append(attn)
            tokens = self.mlp_layers[i](tokens)
            tokens = self.sa_layers[i](tokens, token_pos, key_padding_mask=token_padding)
            pix, _ = self.feat_token_ca_layers[i](pix, tokens, pix_pos, token_pos, key_padding_mask=token_padding,
                                                  need_weights=False)
        tokens, attn = self.final_token_feat_ca(tokens, pix, token_pos, pix_pos, need_weights=maps)
        attn_maps.append(attn)

        pix = pix.reshape(h, w, t, b, -1).permute(3, 2, 4, 0, 1).reshape(b * t, -1, h, w)
        out_feat = self.conv(pix)
        if temporal is not None:
            temporal_pix, hidden = temporal(pix.reshape(b, t, -1, h, w))
            head_feat = self.conv(temporal_pix.flatten(0, 1))
        else:
            head_feat, hidden = out_feat, None

        kernels = self.decoder_norm(self.final_mlp(tokens).permute(1, 0, 2))  # [B, max_inst, C]
        logits = torch.einsum("bqc,btchw->btqhw", kernels, head_feat.reshape(b, t, -1, h, w)).flatten(0, 1)
        out = {"logits": logits, "feat": out_feat, "kernels": kernels}
        if hidden is not None:
            out["hidden"] = hidden
        if guidance is not None:
            out["loss_atten"] = attention_loss(attn_maps, guidance, b * t)
        return out


def attention_loss(attn_maps: list[torch.Tensor], guidance: torch.Tensor, norm: int) -> torch.Tensor:
    """Mean over attention maps of sum_i (1[G_i non-empty] - attention mass of token i inside G_i) / norm.

    attn maps ``[B, max_inst, L]``, guidance ``[B, max_inst, L]`` (1 inside the instance's true
    region at OS8); ``norm`` is B*T as in the reference.
    """
    target = (guidance.sum(-1) > 0).to(guidance.dtype)
    losses = [(target - (guidance * a).sum(-1)).sum() / norm for a in attn_maps]
    return torch.stack(losses).mean()
