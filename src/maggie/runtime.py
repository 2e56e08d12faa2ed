"""Device and distributed backend, chosen in one place for training, evaluation and prediction.

CUDA + NCCL when a GPU is visible, then Apple's MPS, otherwise CPU + gloo.
"""

from __future__ import annotations

import torch

from maggie.errors import ParamsError


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: cuda if available, then mps, else cpu."""
    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise ParamsError(f"unknown device {requested!r} (auto, cpu, cuda, cuda:N or mps)") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ParamsError(f"device {requested!r}: no CUDA GPU is visible on this machine (use auto or cpu)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ParamsError(f"device {requested!r}: MPS is not available on this machine (use auto or cpu)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """The collective backend for a device: NCCL on CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"
