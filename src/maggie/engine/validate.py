"""Validation during training: the paper's validation metrics on the first images of one benchmark."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def validate(model, params: dict[str, Any], stage: str, tset, rt) -> dict[str, float]:
    """MAD/MSE/SAD on the first ``val_count`` samples of ``test.<stage>.val_*``, and the mask's MAD beside it."""
    from maggie.evaluation.benchmarks import evaluate_images, evaluate_videos

    model.eval()
    evaluate = evaluate_images if stage == "image" else evaluate_videos
    result = evaluate(model, params, limit=tset.val_count, device=rt.device, names=("MAD", "MSE", "SAD"),
                      validation=True)
    return {**result["maggie"], "mask_MAD": result["mask_as_alpha"]["MAD"]}
