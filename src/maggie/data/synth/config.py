"""The ``data:`` section of params.yaml as the synthesis reads it: defaults, merging and validation.

The defaults equal the embedded (small) configuration; params.yaml may restate or change any of them.
Unknown keys in the sections owned by synthesis are errors, so a typo never goes unnoticed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from maggie.data.mask_sources import DEFAULT_MASK_SOURCES, DEFAULT_TRACKER, validate_recipe
from maggie.data.synth.procedural import resolve_bank_config
from maggie.data.synth.scenes import IMAGE_DEFAULTS, LEVEL_DEFAULTS
from maggie.errors import ParamsError

SOURCES = ("procedural", "real", "hf", "s3", "local")
LEVELS = {
    "comp_easy": {"instances": [2, 3], "occlusion": [0.0, 0.01], "spacing": [1.15, 1.5]},
    "comp_medium": {
        "instances": [2, 4],
        "occlusion": [0.05, 0.30],
        "spacing": [0.55, 1.0],
        "cross_prob": 0.2,
    },
    "comp_hard": {"instances": [3, 5], "occlusion": [0.50, 0.85], "spacing": [0.1, 0.6], "cross_prob": 0.3},
}
VIDEO_COMMON = {"frames": 10, "size": [192, 256], "fps": 8.0, "pan": 0.01}
DATA_DEFAULTS: dict = {
    "source": "procedural",
    "root": "data",
    "seed": 2024,
    "workers": 2,
    "image_train": {
        "count": 400,
        "size": [192, 256],
        "min_inst": 2,
        "max_inst": 4,
        "height_range": [0.5, 0.9],
        "min_visible": 0.7,
        "jpeg_quality": [90, 95],
    },
    "image_test": {
        "count_per_subset": 40,
        "size": [192, 256],
        "subsets": {
            "in_dist": {"fg_pool": "test", "bg_pool": "test", "min_inst": 2, "max_inst": 4},
            "held_out": {
                "fg_pool": "held_out",
                "bg_pool": "held_out",
                "min_inst": 2,
                "max_inst": 5,
                "jpeg_quality": [40, 75],
                "noise_sigma": [0.0, 0.03],
            },
        },
        "mask_sources": DEFAULT_MASK_SOURCES,
    },
    "video_levels": LEVELS,
    "video_train": {
        "count": 12,
        **VIDEO_COMMON,
        "fg_pool": "train",
        "bg_pool": "train",
        "level_weights": {"comp_easy": 0.2, "comp_medium": 0.5, "comp_hard": 0.3},
        "level_overrides": {"enter_exit_prob": 0.3, "first_frame_visible": False},
    },
    "video_test": {
        "count_per_split": 4,
        **VIDEO_COMMON,
        "fg_pool": "test",
        "bg_pool": "test",
        "splits": ["comp_easy", "comp_medium", "comp_hard"],
        "tracker": DEFAULT_TRACKER,
    },
}
# Keys other stages own (the pull stage's download settings, the bank is checked by procedural.py).
FOREIGN_KEYS = ("hf", "s3", "local", "bank", "real")


def _merge_section(name: str, user: dict | None, extra_keys: tuple[str, ...] = ()) -> dict:
    defaults = DATA_DEFAULTS[name]
    user = user or {}
    if not isinstance(user, dict):
        raise ParamsError(f"params.yaml: data.{name} must be a mapping, got {type(user).__name__}")
    allowed = set(defaults) | set(extra_keys)
    unknown = sorted(set(user) - allowed)
    if unknown:
        raise ParamsError(f"params.yaml: data.{name}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return {**copy.deepcopy(defaults), **copy.deepcopy(user)}


def resolve_data_config(data: dict | None) -> dict:
    """Defaults + the user's data section, validated.  Returns a new dict."""
    data = dict(data or {})
    out = {
        key: copy.deepcopy(data.get(key, DATA_DEFAULTS[key])) for key in ("source", "root", "seed", "workers")
    }
    if out["source"] not in SOURCES:
        raise ParamsError(f"params.yaml: data.source must be one of {SOURCES}, got {out['source']!r}")
    for key in FOREIGN_KEYS:
        if key in data:
            out[key] = copy.deepcopy(data[key])
    out["bank"] = resolve_bank_config(data.get("bank"))
    image_keys = tuple(IMAGE_DEFAULTS)
    out["image_train"] = _merge_section("image_train", data.get("image_train"), image_keys)
    out["image_test"] = _merge_section("image_test", data.get("image_test"), image_keys)
    for subset, cfg in out["image_test"]["subsets"].items():
        bad = sorted(set(cfg or {}) - set(IMAGE_DEFAULTS))
        if bad:
            raise ParamsError(f"params.yaml: data.image_test.subsets.{subset}: unknown keys {bad}")
    sources = out["image_test"]["mask_sources"]
    if not isinstance(sources, dict) or not sources:
        raise ParamsError(
            "params.yaml: data.image_test.mask_sources must be a non-empty mapping name -> recipe"
        )
    for name, recipe in sources.items():
        validate_recipe(name, recipe)
    levels = data.get("video_levels", LEVELS)
    for name, cfg in levels.items():
        bad = sorted(set(cfg or {}) - set(LEVEL_DEFAULTS))
        if bad:
            raise ParamsError(f"params.yaml: data.video_levels.{name}: unknown keys {bad}")
    out["video_levels"] = copy.deepcopy(levels)
    out["video_train"] = _merge_section("video_train", data.get("video_train"))
    out["video_test"] = _merge_section("video_test", data.get("video_test"))
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
    """Read params.yaml and return its resolved ``data`` section."""
    path = Path(params_path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(params, dict) or not isinstance(params.get("data", {}), dict):
        raise ParamsError(f"{path}: expected a mapping with a 'data' section")
    return resolve_data_config(params.get("data"))
