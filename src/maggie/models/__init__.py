"""MaGGIe and its baselines (MGM, MGM*, TCVOM, SparseMat, InstMatt) in pure PyTorch.

All load the official checkpoints unchanged."""

from maggie.models.baselines.instmatt import InstMatt, InstMattConfig
from maggie.models.baselines.mgm import MGM, MGMConfig
from maggie.models.baselines.sparsemat import SparseMat, SparseMatConfig
from maggie.models.baselines.tcvom import TCVOM
from maggie.models.maggie.decoder import DecoderState
from maggie.models.maggie.network import MaGGIe, MaggieConfig, fuse_clip
from maggie.models.registry import build_model, detect_arch, training_objective
from maggie.models.weights import WeightsError, load_model, save_weights

__all__ = ["InstMatt", "InstMattConfig", "MaGGIe", "MaggieConfig", "MGM", "MGMConfig", "SparseMat", "SparseMatConfig",
           "TCVOM", "DecoderState", "WeightsError", "build_model", "detect_arch", "fuse_clip", "load_model",
           "save_weights", "training_objective"]
