"""Loading and saving weights: official MaGGIe checkpoints, project checkpoints, hub ids.

The model's ``state_dict`` uses the official key names and layouts (spconv kernels
``[out, kh, kw, in]``, spectral-norm ``weight_bar/u/v``), so an official file loads
unchanged and our files load in the official code.  Loading is safe: safetensors, or
``torch.load(weights_only=True)`` for ``.pth``/``.pt`` files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from maggie.files import atomic_write

log = logging.getLogger(__name__)

HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


from maggie.errors import WeightsError  # noqa: E402  (re-exported)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _is_hub_id(text: str) -> bool:
    """``owner/name`` that is no local path (a missing ``models/best.safetensors`` is a missing file, not a hub id)."""
    parts = text.split("/")
    return (len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~")) and not os.path.exists(text)
            and not text.lower().endswith(WEIGHT_SUFFIXES))


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Fetch an official checkpoint (a hub *directory* with config + weights) and return the weights file."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise WeightsError("huggingface_hub is needed to download hub checkpoints: pip install huggingface_hub") \
            from exc
    last_error: Exception | None = None
    for filename in HUB_WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except LocalEntryNotFoundError as exc:
            raise WeightsError(
                f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached; connect to the "
                f"internet (unset HF_HUB_OFFLINE), or download the checkpoint elsewhere and pass its file path"
            ) from exc
        except Exception as exc:  # EntryNotFound for this filename: try the next one
            last_error = exc
            if exc.__class__.__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                break
    raise WeightsError(f"{repo_id}: could not download weights from the hub ({last_error})")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata from a ``.safetensors`` file or a ``.pth`` (project or official) file."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            sd = load_file(str(path))
            info = json.loads(meta["maggie"]) if "maggie" in meta else {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:80]}); "
                               "truncated or another format?") from exc
        return sd, info
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable safetensors or torch weights file ({exc.__class__.__name__})") \
            from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    for nest in ("model", "network"):  # training checkpoints (FTP-VM's keep the weights under "network")
        if isinstance(obj, dict) and nest in obj and isinstance(obj[nest], dict):
            obj = obj[nest]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}
    return sd, {}


def prepare_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Cast floats to the model's dtype and refuse missing or unknown keys, listing them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unknown = sorted(set(sd) - set(own))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unknown:
            parts.append(f"unknown {len(unknown)} keys: {', '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}")
        raise WeightsError(f"{source}: weights do not fit this model; " + "; ".join(parts))
    out = {}
    for k, v in sd.items():
        ref = own[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise WeightsError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(ref.shape)}")
        if v.is_complex() or v.dtype == torch.bool != ref.dtype:
            raise WeightsError(f"{source}: {k} is {v.dtype}, the model expects {ref.dtype}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise WeightsError(f"{source}: {k} holds NaN or infinite values (damaged or diverged weights)")
        out[k] = v.to(ref.dtype) if ref.is_floating_point() else v.to(ref.dtype)
    return out


def load_model(weights: str | os.PathLike | dict[str, torch.Tensor], arch: str | None = None,
               device: str | torch.device = "cpu", **config: Any) -> torch.nn.Module:
    """Build a network in eval mode from weights (path, hub id, or state_dict).

    ``arch`` is ``"maggie_image"``, ``"maggie_video"``, ``"mgm"``, ``"mgm_stacked"``, ``"mgm_tcvom"``,
    ``"mgm_stacked_tcvom"``, ``"sparsemat"`` or ``"instmatt"``; ``None`` detects it from the keys.
    Extra keyword arguments override the config's fields (e.g. ``refine_mode="dense"``).
    """
    info: dict[str, Any] = {}
    if isinstance(weights, dict):
        sd, source = weights, "state_dict"
    else:
        text = str(weights)
        source = text
        path = download_from_hub(text) if _is_hub_id(text) else Path(text)
        sd, info = read_state_dict(path)
    from maggie.models.registry import build_model, detect_arch

    arch = arch or info.get("arch") or detect_arch(sd)
    fields = {k: v for k, v in {**info.get("config", {}), **config}.items() if k != "arch"}
    model = build_model(arch, **fields)
    model.load_state_dict(prepare_state_dict(model, sd, source))
    return model.to(device).eval()


def save_weights(model: torch.nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the model's weights as safetensors (official key layout), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    core = model.module if hasattr(model, "module") else model
    info = {"arch": core.cfg.arch, "config": core.cfg.to_dict(), **(extra or {})}
    sd = {k: v.detach().contiguous().cpu() for k, v in core.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata={"maggie": json.dumps(info)}))
