"""MaGGIe and its MGM baselines in pure PyTorch, compatible with the official checkpoints."""

from .checkpoint import WeightsError, build_model, detect_arch, load_model, save_weights
from .decoder import DecoderState
from .maggie import MaGGIe, MaggieConfig, fuse_clip
from .mgm import MGM, MGMConfig
from .tcvom import TCVOM

__all__ = ["MaGGIe", "MaggieConfig", "MGM", "MGMConfig", "TCVOM", "DecoderState", "WeightsError", "build_model",
           "detect_arch", "fuse_clip", "load_model", "save_weights"]
