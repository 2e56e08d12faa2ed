"""``params.yaml`` is the only configuration: load it, read typed stage settings from it.

Key names follow the reference configs where they have an equivalent (``train.*``,
``model.loss_*_w``, ``dataset.train.*``, ``test.*``, ``wandb.*``), split per stage
(``train.image``, ``train.video``) because the pipeline trains both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from maggie.errors import ParamsError  # noqa: E402  (re-exported: the config's error type)

SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 plus YAML 1.2's exponent floats: ``5e-05``, as DVC (``dvc exp run -S``) and ruamel write a
    float, is a number here, where PyYAML alone reads it as a string."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """Parse params-style YAML (``params.yaml``, presets)."""
    return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 (a SafeLoader subclass)


def load_params(path: str | os.PathLike = "params.yaml", validate: bool = True) -> dict[str, Any]:
    """The params file as a dict, checked against ``params.schema.yaml`` (one line naming the key and file)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        data = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ParamsError(f"{path}: not valid YAML ({first})") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    if validate:
        check_schema(data, str(path))
    return data


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def check_schema(params: dict[str, Any], where: str = "params.yaml") -> None:
    """Refuse an unknown key, a wrong type or an out-of-range value with one line naming it."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema())(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    while err.context:  # oneOf/anyOf: the most specific alternative
        err = jsonschema.exceptions.best_match(err.context)
    key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        message = f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
    elif err.validator == "required":
        message = err.message.replace(" is a required property", " is missing")
    else:
        message = err.message
    raise ParamsError(f"{where}: {key}: {message}")


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
    """Instantiate a dataclass from a mapping, refusing unknown and missing keys with the section name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ParamsError(f"params.yaml: unknown keys in '{where}': {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ParamsError(f"params.yaml: '{where}': {exc}") from exc


# The typed views of the stage sections.  They hold no default of their own: params.yaml is the
# single source, and the schema has already checked every key.


@dataclass(kw_only=True)
class LossWeights:
    loss_alpha_w: float
    loss_alpha_grad_w: float
    loss_alpha_lap_w: float
    loss_atten_w: float
    loss_reweight_os8: bool
    loss_dtSSD_w: float
    loss_temp_w: float
    loss_sum_one_w: float  # InstMatt: its tri-mattes T + R + B add up to 1; MaGGIe: its mattes add up to <= 1
    loss_os8_bce_w: float  # not in the reference: BCE on the OS8 logits (training from scratch)
    loss_occlusion_w: float  # not in the reference: extra weight on a person's pixels of other people
    loss_meeting_w: float  # not in the reference: extra weight on the band where two people meet
    loss_meeting_sum_w: float  # not in the reference: there the mattes add up to the true alphas' total
    loss_after_sum_rule: bool  # not in the reference: the terms score the mattes after the guided sum rule


@dataclass(kw_only=True)
class ModelSettings(LossWeights):
    arch: str
    max_inst: int
    warmup_detail_iter: int
    refine_mode: str
    # As the reference's ``model.encoder_args``; ``pretrained``: false, true (the reference's
    # pretrain/model_best_resnet34_En_nomixup.pth) or the path of GCA-Matting's encoder checkpoint.
    encoder_args: dict[str, Any]
    routing_init: bool
    guidance_stem_init: bool


@dataclass(kw_only=True)
class TrainSettings:
    max_iter: int
    batch_size: int
    lr: float
    weight_decay: float
    betas: list[float]
    warmup_iters: int
    clip_grad_norm: float
    val_iter: int
    val_count: int
    ckpt_iter: int
    log_iter: int
    vis_iter: int
    num_workers: int
    seed: int
    precision: str  # auto | fp32 | fp16 | bf16
    init: str | list[str]  # weights to start from, in order: paths, hub ids, or "image" (the image stage's best)
    out_dir: str
    device: str
    train_only: list[str]  # parameter-name prefixes to train ([]: all)
    frozen_bn_stats: bool  # batch norms keep their running statistics while training


def stage_settings(params: dict[str, Any], stage: str) -> tuple[ModelSettings, TrainSettings]:
    if stage not in ("image", "video"):
        raise ParamsError(f"unknown training stage {stage!r}; expected 'image' or 'video'")
    model = fill(ModelSettings, section(params, f"model.{stage}"), f"model.{stage}")
    train = fill(TrainSettings, section(params, f"train.{stage}"), f"train.{stage}")
    return model, train
