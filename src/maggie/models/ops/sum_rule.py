"""People's mattes limited to adding up to at most 1, the guided first (``test.sum_to_one``).

One implementation for evaluation (``inference.pipeline.limit_sum`` calls it on arrays) and for training
(``model.<stage>.loss_after_sum_rule`` scores the mattes as they will be evaluated).
"""

from __future__ import annotations

import torch


def limit_sum(alpha: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Mattes ``[..., N, H, W]`` reduced where they add up to more than 1 (differentiable).

    Without ``masks`` every matte at such a pixel is scaled by the same factor.  With the guidance
    ``masks`` (same shape), the people whose mask does not cover the pixel give way first: their mattes
    are scaled into what the guided people leave (if anything), and the guided ones are scaled only if
    they alone exceed 1.
    """
    total = alpha.sum(-3, keepdim=True)
    if masks is None:
        return torch.where(total > 1, alpha / total.clamp_min(1e-6), alpha)
    guided = masks > 0
    inside = torch.where(guided, alpha, torch.zeros_like(alpha)).sum(-3, keepdim=True)
    outside = total - inside
    room = (1 - inside).clamp_min(0)
    one = torch.ones_like(total)
    scale_out = torch.where(outside > room, room / outside.clamp_min(1e-6), one)
    scale_in = torch.where(inside > 1, 1 / inside.clamp_min(1e-6), one)
    return alpha * torch.where(guided, scale_in, scale_out)
