"""Training checkpoints: weights as safetensors, optimiser/scheduler/RNG/step state beside them.

Both files are written atomically, weights first, so a run killed at any moment leaves
either the previous complete checkpoint or the new one.  The state file holds only
tensors and plain Python values and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maggie.config.methods import init_sources
from maggie.config.params import section
from maggie.files import atomic_write, sha256_file, stable_hash
from maggie.models.weights import WeightsError, read_state_dict, save_weights

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(out_dir: Path, tag: str, model, optimizer, scheduler, scaler, step: int,
                        extra: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / f"{tag}.safetensors", {"step": step, **extra})
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else {}, "step": step, "rng": rng_state(),
             "extra": extra}
    atomic_write(out_dir / f"{tag}_state.pt", lambda p: torch.save(state, p))


def load_training_state(out_dir: Path, tag: str, model, optimizer, scheduler, scaler,
                        fingerprint: str) -> dict[str, Any] | None:
    """Resume state of an interrupted run with the same settings, or None (start afresh)."""
    weights, state_path = out_dir / f"{tag}.safetensors", out_dir / f"{tag}_state.pt"
    if not (weights.exists() and state_path.exists()):
        return None
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(f"{state_path}: damaged training state ({str(exc).splitlines()[0][:80]}); delete "
                           f"{out_dir} to start the stage afresh") from exc
    if state["extra"].get("fingerprint") != fingerprint:
        log.info("%s belongs to other settings; starting afresh", state_path)
        return None
    sd, _ = read_state_dict(weights)
    core = model.module if hasattr(model, "module") else model
    core.load_state_dict({k: v.to(core.state_dict()[k].dtype) for k, v in sd.items()})
    if state["step"] != _weights_step(weights):
        raise WeightsError(f"{state_path}: belongs to step {state['step']} but {weights.name} to another; "
                           "delete both to start over")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", weights, state["step"])
    return state


def _weights_step(path: Path) -> int | None:
    _, info = read_state_dict(path)
    return info.get("step")


def verify_checksum(path: Path) -> None:
    """Weights listed in a ``SHA256SUMS`` file beside them (the shipped warm start) must match it."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    listed = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            listed[name.lstrip("*")] = digest
    if path.name in listed and listed[path.name] != sha256_file(path):
        raise WeightsError(f"{path}: checksum differs from {sums} (a damaged or replaced file; restore it with "
                           "'git checkout' or remake it with the pretrain preset)")


def init_weights(model, source: str) -> None:
    """Start from other weights: every key the source has must fit; keys it lacks stay as initialised
    (e.g. the video-only modules when starting the video stage from an image checkpoint)."""
    from maggie.models.weights import _is_hub_id, download_from_hub

    path = download_from_hub(source) if _is_hub_id(source) else Path(source)
    if path.is_file():
        verify_checksum(path)
    sd, _ = read_state_dict(path)
    own = model.state_dict()
    unknown = sorted(set(sd) - set(own))
    if unknown:
        raise WeightsError(f"{source}: keys this model does not have: {', '.join(unknown[:8])}")
    bad = [k for k in sd if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise WeightsError(f"{source}: shape mismatch for {', '.join(bad[:8])}")
    missing = sorted(set(own) - set(sd))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{source}: {bad[0]} holds NaN or infinite values (damaged or diverged weights)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    log.info("initialised from %s (%d tensors; %d kept from initialisation%s)", source, len(sd), len(missing),
             f": {', '.join(missing[:4])} ..." if missing else "")


def video_network_from(image: str, temporal: str) -> torch.nn.Module:
    """The video network in eval mode from image weights, then the weights of its video stage (or a warm
    start's temporal modules) over them: how a video stage's result and the shipped warm start are read."""
    from maggie.models import build_model

    model = build_model("maggie_video")
    init_weights(model, str(image))
    init_weights(model, str(temporal))
    return model.eval()


def run_fingerprint(params: dict[str, Any], stage: str) -> str:
    """Hash of everything a checkpoint belongs to: resuming only continues the same run.

    The settings, the weights it started from and the code the training stage runs (its import
    closure, the same files ``dvc.yaml`` lists as the stage's code), so that after a change to the
    network, losses or loaders a rerun starts afresh instead of "resuming" a run of other code.
    """
    from maggie.config.code_deps import code_hash, stage_closure

    relevant: dict[str, Any] = {k: params.get(k) for k in ("seed", "data", "dataset", "model")}
    relevant["train"] = {k: v for k, v in section(params, f"train.{stage}").items() if k not in ("device",)}
    relevant["code"] = code_hash(stage_closure(f"train_{stage}"))
    relevant["init"] = [sha256_file(s) if Path(s).is_file() else s for s in init_sources(params, stage)]
    return stable_hash(relevant)
