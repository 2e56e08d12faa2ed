"""``params.yaml`` is the only configuration: load it, read typed stage settings from it.

Key names follow the reference configs where they have an equivalent (``train.*``,
``model.loss_*_w``, ``dataset.train.*``, ``test.*``, ``wandb.*``), split per stage
(``train.image``, ``train.video``) because the pipeline trains both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from maggie.errors import ParamsError  # noqa: E402  (re-exported: the config's error type)


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], dotted: str) -> dict[str, Any]:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml: missing section '{dotted}'")
        node = node[part]
    if not isinstance(node, dict):
        raise ParamsError(f"params.yaml: '{dotted}' must be a mapping")
    return node


def fill(cls, values: dict[str, Any], where: str):
    """Instantiate a dataclass from a mapping, refusing unknown keys (typos) with the section name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ParamsError(f"params.yaml: unknown keys in '{where}': {', '.join(unknown)}")
    return cls(**values)


@dataclass
class LossWeights:
    loss_alpha_w: float = 1.0
    loss_alpha_grad_w: float = 0.05
    loss_alpha_lap_w: float = 0.05
    loss_atten_w: float = 5.0
    loss_reweight_os8: bool = True
    loss_dtSSD_w: float = 0.0
    loss_temp_w: float = 1.0
    loss_sum_one_w: float = 0.0  # InstMatt: its tri-mattes T + R + B should add up to 1
    loss_os8_bce_w: float = 0.0  # not in the reference: BCE on the OS8 logits (training from scratch)


@dataclass
class ModelSettings(LossWeights):
    arch: str = "maggie_image"
    max_inst: int = 10
    warmup_detail_iter: int = 3000
    refine_mode: str = "sparse"
    routing_init: bool = False
    guidance_stem_init: bool = False
    # As the reference's ``model.encoder_args``; ``pretrained``: false, true (the reference's
    # pretrain/model_best_resnet34_En_nomixup.pth) or the path of GCA-Matting's encoder checkpoint.
    encoder_args: dict[str, Any] = field(default_factory=lambda: {"pretrained": False})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.encoder_args) - {"pretrained"})
        if unknown:
            raise ParamsError(f"params.yaml: unknown keys in 'model.*.encoder_args': {', '.join(unknown)} "
                              "(the encoder's shape is fixed by the architecture; only 'pretrained' is read)")


@dataclass
class TrainSettings:
    max_iter: int = 52000
    batch_size: int = 12
    lr: float = 1.5e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1000
    clip_grad_norm: float = 0.01
    val_iter: int = 500
    val_count: int = 20
    ckpt_iter: int = 500
    log_iter: int = 10
    vis_iter: int = 50
    num_workers: int = 2
    seed: int = 1234
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    init: str = ""  # weights to start from: path, hub id, or "image" (the image stage's best)
    out_dir: str = "models/image"
    device: str = "auto"


def stage_settings(params: dict[str, Any], stage: str) -> tuple[ModelSettings, TrainSettings]:
    if stage not in ("image", "video"):
        raise ParamsError(f"unknown training stage {stage!r}; expected 'image' or 'video'")
    model = fill(ModelSettings, section(params, f"model.{stage}"), f"model.{stage}")
    train = fill(TrainSettings, section(params, f"train.{stage}"), f"train.{stage}")
    return model, train
