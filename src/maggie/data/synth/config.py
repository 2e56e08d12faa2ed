"""The ``data:`` section of params.yaml as the synthesis reads it, with the checks the schema cannot make.

params.yaml holds every value (its schema has checked keys and types when it was loaded); this adds
what needs the generator's knowledge: the mask-source recipes, the video levels the other sections
name, and the asset bank's pools and kinds.
"""

from __future__ import annotations

import copy
from pathlib import Path

from maggie.config.params import load_params
from maggie.data.mask_sources import DEFAULT_TRACKER, validate_recipe
from maggie.data.synth.procedural import resolve_bank_config
from maggie.data.synth.scenes import IMAGE_DEFAULTS, LEVEL_DEFAULTS
from maggie.errors import ParamsError

SECTIONS = ("source", "root", "seed", "workers", "bank", "image_train", "image_test", "video_levels", "video_train",
            "video_test")


def resolve_data_config(data: dict) -> dict:
    """The data section, checked; a new dict (the bank section completed with its generator's defaults)."""
    missing = [k for k in SECTIONS if k not in (data or {})]
    if missing:
        raise ParamsError(f"params.yaml: data: missing {', '.join(missing)}")
    out = copy.deepcopy(dict(data))
    try:
        out["bank"] = resolve_bank_config(data.get("bank"))
    except ValueError as exc:
        raise ParamsError(f"params.yaml: {exc}") from exc
    for where, cfg in [("image_train", out["image_train"]), ("image_test", out["image_test"]),
                       *((f"image_test.subsets.{k}", v) for k, v in out["image_test"]["subsets"].items())]:
        bad = sorted(set(cfg or {}) - set(IMAGE_DEFAULTS) - {"count", "count_per_subset", "subsets", "mask_sources"})
        if bad:
            raise ParamsError(f"params.yaml: data.{where}: unknown keys {bad}")
    for name, recipe in out["image_test"]["mask_sources"].items():
        validate_recipe(name, recipe)
    levels = out["video_levels"]
    for name, cfg in levels.items():
        bad = sorted(set(cfg or {}) - set(LEVEL_DEFAULTS))
        if bad:
            raise ParamsError(f"params.yaml: data.video_levels.{name}: unknown keys {bad}")
    for name in list(out["video_train"]["level_weights"]) + list(out["video_test"]["splits"]):
        if name not in levels:
            raise ParamsError(f"params.yaml: video level {name!r} is not defined in data.video_levels")
    bad = sorted(set(out["video_train"]["level_overrides"]) - set(LEVEL_DEFAULTS))
    if bad:
        raise ParamsError(f"params.yaml: data.video_train.level_overrides: unknown keys {bad}")
    bad = sorted(set(out["video_test"]["tracker"]) - set(DEFAULT_TRACKER))
    if bad:
        raise ParamsError(f"params.yaml: data.video_test.tracker: unknown keys {bad}")
    return out


def load_data_config(params_path: str | Path) -> dict:
    """Read params.yaml (checked against its schema) and return its resolved ``data`` section."""
    return resolve_data_config(load_params(params_path)["data"])
