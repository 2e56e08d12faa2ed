"""Fast exact reductions of masks.

torch's CPU ``any`` is 20-50x slower than a max over the same bytes (5.9 M booleans, 2 threads: 3.5 ms against
0.06 ms for ``amax`` of their ``uint8`` view), and the refinement asks "is anything set here?" of every person's
full-resolution map several times a forward.  Same results, any device.
"""

from __future__ import annotations

import torch


def _tracing() -> bool:
    """The JIT tracer (ONNX export) has no dtype-reinterpreting ``view``: there the plain ``any`` is used."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def any_along(x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``x.any(dim)`` of a boolean tensor."""
    if x.dtype != torch.bool:
        raise TypeError(f"any_along takes a boolean tensor, got {x.dtype}")
    if _tracing():
        return x.any(dim)
    return x.view(torch.uint8).amax(dim).bool()


def has_nonzero(x: torch.Tensor) -> bool:
    """``bool(x.any())``: is some value non-zero (NaN counts, as in ``any``)?"""
    if x.numel() == 0:
        return False
    if x.dtype == torch.bool:
        return bool(x.any() if _tracing() else x.view(torch.uint8).amax())
    if not x.is_floating_point():
        return bool(x.any())
    lo, hi = torch.aminmax(x)
    return bool((hi > 0) | (lo < 0) | torch.isnan(hi))
