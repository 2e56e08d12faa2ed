"""Every architecture in one table: its config, its network class and its training objective.

``build_model`` instantiates from the table (the config fields an arch does not have are
ignored), ``training_objective`` returns the loss an arch trains with, and ``detect_arch``
tells an official or project checkpoint's architecture from its keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from maggie.models.baselines.ftpvm_adapter import FTPVMBaseline, FTPVMConfig, ftpvm_objective
from maggie.models.baselines.instmatt import InstMatt, InstMattConfig, instmatt_loss
from maggie.models.baselines.mgm import MGM, MGMConfig
from maggie.models.baselines.otvm_adapter import OTVMBaseline, OTVMConfig, otvm_objective
from maggie.models.baselines.sparsemat import SparseMat, SparseMatConfig, sparsemat_loss
from maggie.models.baselines.tcvom import TCVOM
from maggie.models.maggie.network import MaGGIe, MaggieConfig
from maggie.models.maggie.objective import training_loss
from maggie.models.weights import WeightsError

Objective = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]


def _sparsemat_objective(out, batch, w) -> dict[str, torch.Tensor]:
    return sparsemat_loss(out, batch["alpha"], w.loss_alpha_w, w.loss_alpha_lap_w, w.loss_alpha_grad_w)


def _instmatt_objective(out, batch, w) -> dict[str, torch.Tensor]:
    return instmatt_loss(out, batch["alpha"], w.loss_alpha_w, w.loss_alpha_lap_w, w.loss_sum_one_w)


@dataclass(frozen=True)
class ArchSpec:
    config: type
    network: type[nn.Module]
    objective: Objective  # (training outputs, batch, loss weights) -> {"total": ..., "loss_<term>": ...}


ARCHS: dict[str, ArchSpec] = {
    "maggie_image": ArchSpec(MaggieConfig, MaGGIe, training_loss),
    "maggie_video": ArchSpec(MaggieConfig, MaGGIe, training_loss),
    "mgm": ArchSpec(MGMConfig, MGM, training_loss),
    "mgm_stacked": ArchSpec(MGMConfig, MGM, training_loss),
    "mgm_tcvom": ArchSpec(MGMConfig, TCVOM, training_loss),
    "mgm_stacked_tcvom": ArchSpec(MGMConfig, TCVOM, training_loss),
    "sparsemat": ArchSpec(SparseMatConfig, SparseMat, _sparsemat_objective),
    "instmatt": ArchSpec(InstMattConfig, InstMatt, _instmatt_objective),
    "ftpvm": ArchSpec(FTPVMConfig, FTPVMBaseline, ftpvm_objective),
    "otvm": ArchSpec(OTVMConfig, OTVMBaseline, otvm_objective),
}


def spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise WeightsError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHS)}")
    return ARCHS[arch]


def build_model(arch: str, **config: Any) -> nn.Module:
    """A freshly initialised network of ``arch``; ``config`` fields the arch does not have are ignored."""
    s = spec(arch)
    names = {f.name for f in fields(s.config)}
    return s.network(s.config(**{k: v for k, v in config.items() if k in names and k != "arch"}, arch=arch))


def training_objective(arch: str) -> Objective:
    return spec(arch).objective


VIDEO_ONLY_PREFIXES = ("decoder.os8_temp_module.", "decoder.diff_module.")


def detect_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """The architecture of a state dict, from keys only an official checkpoint of it has."""
    if any(k.startswith(VIDEO_ONLY_PREFIXES) for k in state_dict):
        return "maggie_video"
    if "encoder.mask_embed_layer.weight" in state_dict and "decoder.refine_OS8.query_feat.weight" in state_dict:
        return "maggie_image"
    if "lpn.decoder.p0x.layers.0.weight" in state_dict and "shm.decoder.conv_p8x.weight" in state_dict:
        return "sparsemat"
    if "backbone.backbone.conv_stem.weight" in state_dict and "trimap_fuse.gated_convs.0.0.conv.weight" in state_dict:
        return "ftpvm"
    if "NET.encoder.conv1.weight" in state_dict and "trimap.model.Encoder_M.conv1_m.weight" in state_dict:
        return "otvm"
    stem = state_dict.get("encoder.conv1.module.weight_bar")
    if "refiner.split.weight" in state_dict:
        return "instmatt"
    if "decoder.refine_OS8.0.weight" in state_dict and stem is not None and stem.dim() == 4:
        arch = "mgm" if stem.shape[1] == 4 else "mgm_stacked"  # RGB + 1 mask, or RGB + 10 stacked masks
        return arch + "_tcvom" if "decoder.fam.key_conv.weight" in state_dict else arch
    raise WeightsError("cannot tell the architecture from the weights' keys; pass arch=... explicitly")
