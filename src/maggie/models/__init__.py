"""MaGGIe and its baselines (MGM, MGM*, TCVOM, SparseMat, InstMatt) in pure PyTorch.

All load the official checkpoints unchanged."""

from .checkpoint import WeightsError, build_model, detect_arch, load_model, save_weights
from .decoder import DecoderState
from .instmatt import InstMatt, InstMattConfig
from .maggie import MaGGIe, MaggieConfig, fuse_clip
from .mgm import MGM, MGMConfig
from .sparsemat import SparseMat, SparseMatConfig
from .tcvom import TCVOM

__all__ = ["InstMatt", "InstMattConfig", "MaGGIe", "MaggieConfig", "MGM", "MGMConfig", "SparseMat", "SparseMatConfig",
           "TCVOM", "DecoderState",
           "WeightsError", "build_model", "detect_arch", "fuse_clip", "load_model", "save_weights"]
