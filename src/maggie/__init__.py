"""MaGGIe in pure PyTorch: mask-guided human instance matting.

``from maggie import Predictor`` is the user API (``maggie.inference``); ``maggie.models`` has the
networks and their weights loader.  Imports are lazy so that a pipeline stage only loads, and
only depends on, the code it runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Predictor", "load_model"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from maggie.inference.predictor import Predictor

        return Predictor
    if name == "load_model":
        from maggie.models.weights import load_model

        return load_model
    raise AttributeError(f"module 'maggie' has no attribute {name!r}")
