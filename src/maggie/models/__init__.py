"""MaGGIe networks in pure PyTorch, compatible with the official checkpoints."""

from .checkpoint import WeightsError, detect_arch, load_model, save_weights
from .decoder import DecoderState
from .maggie import MaGGIe, MaggieConfig, fuse_clip

__all__ = ["MaGGIe", "MaggieConfig", "DecoderState", "WeightsError", "detect_arch", "fuse_clip", "load_model",
           "save_weights"]
