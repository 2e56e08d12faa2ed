"""What a training run leaves to look at: CSV curves (for ``dvc plots``), wandb, matte previews."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maggie.files import write_text

log = logging.getLogger("maggie.engine")

TRAIN_FIELDS = ["step", "lr", "loss", "loss_rec", "loss_lap", "loss_grad", "loss_atten", "loss_dtSSD", "loss_temp",
                "loss_sum_one", "loss_os8_bce", "loss_meeting_sum"]
VAL_FIELDS = ["step", "MAD", "MSE", "SAD", "mask_MAD"]


class CurveWriter:
    """Appends rows to a CSV (for ``dvc plots``), rewriting the file atomically each time."""

    def __init__(self, path: Path, fields: list[str], keep: bool):
        self.path, self.fields = path, fields
        self.rows: list[dict[str, Any]] = []
        if keep and path.exists():
            with path.open() as f:
                self.rows = list(csv.DictReader(f))

    def add(self, row: dict[str, Any]) -> None:
        step = row["step"]
        self.rows = [r for r in self.rows if int(r["step"]) < step] + [row]
        self.write()

    def write(self) -> None:
        lines = [",".join(self.fields)] + [",".join(str(r.get(k, "")) for k in self.fields) for r in self.rows]
        write_text(self.path, "\n".join(lines) + "\n")


def make_wandb(params: dict[str, Any], stage: str, enabled: bool):
    if not enabled:
        return None
    cfg = params.get("wandb", {}) or {}
    mode = cfg.get("mode", "offline")
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; logging to files only")
        return None
    (Path("outputs") / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.get("project", "maggie"), entity=cfg.get("entity") or None, mode=mode,
                      dir=str(Path("outputs") / "wandb"), name=f"{stage}", config=params, reinit=True)


def matte_preview(batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> np.ndarray:
    """Image | guidance | prediction | truth for the first sample, instances colour-coded."""
    from maggie.drawing import colour_mattes
    from maggie.inference.pipeline import denormalise

    img = denormalise(batch["image"][0, 0])
    row = [img, colour_mattes(batch["mask"][0, 0].float().cpu().numpy()),
           colour_mattes(out["alpha"][0, 0].detach().float().cpu().numpy()),
           colour_mattes(batch["alpha"][0, 0].float().cpu().numpy())]
    return np.concatenate(row, axis=1)
