"""The methods a run compares: MaGGIe, the trained baselines and the references.

``params.yaml`` lists them under ``methods`` (``references`` need no training; ``baselines`` are
trained and evaluated by the same stages as MaGGIe).  A baseline is an overlay on the shared
settings: ``baselines.<name>.<stage>`` replaces keys of ``model.<stage>`` (the architecture and
its loss weights, as in the reference's config for it), its ``max_inst`` also sets the training
loader's instance slots, and its outputs go to ``models/baselines/<name>/<stage>``.  A baseline
whose ``video`` entry is null has no video training and is evaluated frame by frame with its
image weights, as the paper evaluates image methods on video.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from maggie.config.params import ParamsError, section

NETWORK = "maggie"
# MaGGIe's image stage run frame by frame on the videos: what the video stage has to improve on
# (temporal consistency, dtSSD); evaluated by the evaluate_video_frames stages.
IMAGE_STAGE_ON_VIDEO = "maggie_frames"
BASELINES_DIR = Path("models/baselines")
# Methods guided by frame 0 only (one trimap), as their authors run them; the rest get a mask on every frame.
FRAME_ZERO_ARCHS = ("ftpvm", "otvm")


def baseline_settings(params: dict[str, Any], name: str) -> dict[str, Any]:
    table = params.get("baselines") or {}
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ParamsError(f"params.yaml: no 'baselines.{name}' entry (known baselines: {known})")
    entry = table[name] or {}
    if not isinstance(entry.get("image"), dict) or not entry["image"].get("arch"):
        raise ParamsError(f"params.yaml: 'baselines.{name}.image' must give at least an 'arch'")
    return entry


BEST = "best.safetensors"


def stage_dir(params: dict[str, Any], stage: str, method: str = NETWORK) -> Path:
    """Where a method's training stage writes (``train.<stage>.out_dir``; baselines under ``models/baselines``)."""
    if method == IMAGE_STAGE_ON_VIDEO:
        return Path(section(params, "train.image")["out_dir"])
    if method == NETWORK:
        return Path(section(params, f"train.{stage}")["out_dir"])
    return BASELINES_DIR / method / stage


def best_weights(params: dict[str, Any], stage: str, method: str = NETWORK) -> Path:
    """The weights a training stage selects (best validation MAD), that evaluation and prediction load."""
    return stage_dir(params, stage, method) / BEST


def init_sources(params: dict[str, Any], stage: str) -> list[str]:
    """``train.<stage>.init`` as a list of weights (``image``: the image stage's best), applied in order."""
    init = section(params, f"train.{stage}").get("init") or []
    init = [init] if isinstance(init, str) else list(init)
    return [str(best_weights(params, "image")) if s == "image" else str(s) for s in init]


def frame_zero_guided(params: dict[str, Any], name: str) -> bool:
    """Whether baseline ``name`` is guided by the first frame only (FTP-VM, OTVM)."""
    entry = baseline_settings(params, name)
    return (entry.get("video") or entry["image"])["arch"] in FRAME_ZERO_ARCHS


def has_video_training(params: dict[str, Any], name: str) -> bool:
    return bool(baseline_settings(params, name).get("video"))


def method_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    """``params`` as the baseline ``name`` trains with (a deep copy; ``maggie`` returns it unchanged)."""
    if name == NETWORK:
        return params
    entry = baseline_settings(params, name)
    out = copy.deepcopy(params)
    for stage in ("image", "video"):
        overlay = entry.get(stage) or entry["image"]
        model = {**section(out, f"model.{stage}"), **overlay}
        out["model"][stage] = model
        if "max_inst" in overlay:
            out["dataset"]["train"][stage]["max_inst"] = overlay["max_inst"]
        # A baseline trains from scratch (its image stage) and from its own image stage (video): MaGGIe's
        # warm start does not fit its network; its train.<stage> overlay may still name other weights.
        own = {"init": "" if stage == "image" else "image",
               **section(params, "methods").get("baseline_train", {}).get(stage, {})}
        out["train"][stage] = {**section(out, f"train.{stage}"), **own, **(entry.get("train", {}).get(stage) or {}),
                               "out_dir": str(stage_dir(params, stage, name))}
    return out
