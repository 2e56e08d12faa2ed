"""Device and distributed backend, chosen in one place for training, evaluation and prediction.

CUDA + NCCL when a GPU is visible, then Apple's MPS, otherwise CPU + gloo.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

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


# glibc maps every allocation above its mmap threshold (at most 32 MB, adjusted as blocks are freed) fresh from
# the system and unmaps it when freed, so each tensor of tens of MB (the refinement's tile batches at OS1, ten
# people's full-resolution mattes) has every page faulted in and zeroed again on every forward.  Served from the
# heap and kept there, they reuse pages already mapped: on bench_vs_reference's 576x1024, 5-person case the
# refinement took about 1400 ms with the defaults and about 600 ms with these (benchmarks/README.md).
HEAP_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(threshold: int = HEAP_THRESHOLD) -> bool:
    """Serve allocations up to ``threshold`` bytes from the C heap and keep freed heap memory for reuse
    (glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``); True if set.

    For processes that run the networks over and over (prediction, evaluation, training): the process then
    keeps its peak memory instead of handing every freed tensor back to the system.  Called by ``maggie``, the
    training loop and the evaluation stages (and their workers); a no-op off glibc, when
    ``MAGGIE_SYSTEM_MALLOC=1``, or when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is set (the
    user's own settings win).
    """
    if not sys.platform.startswith("linux") or os.environ.get("MAGGIE_SYSTEM_MALLOC") == "1":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    threshold = min(threshold, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
