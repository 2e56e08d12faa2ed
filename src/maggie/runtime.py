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


def evaluation_workers(device: torch.device, jobs: int, requested: int | str = "auto") -> int:
    """How many processes evaluate ``jobs`` independent benchmarks: one per CPU core when on the CPU and there
    are at least two jobs per process (two one-thread processes do about 1.35x the work of one two-thread
    process on two cores, since much of an evaluation is single-threaded), otherwise one (GPUs: one process)."""
    if requested != "auto":
        if not str(requested).isdigit() or int(requested) < 1:
            raise ParamsError(f"workers {requested!r}: expected auto or a whole number >= 1")
        return max(1, min(int(requested), jobs))
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), jobs // 2))
