"""Start the encoder from GCA-Matting's pretrained ResNet-34 (``model_best_resnet34_En_nomixup.pth``).

The reference initialises its image stage this way: the checkpoint's ``state_dict`` (keys with the
``module.`` prefix of DataParallel) holds GCA-Matting's ResNet-34-D encoder, whose module names are
those of our :class:`~maggie.models.encoder.ShortcutEncoder` trunk.  Its stem convolution reads
other input channels than ours (image + instance embedding), so its weights (``conv1.module.weight_bar``
and ``weight_v``) are dropped and the stem keeps its own initialisation, as in the reference; the
shortcut branches and the mask embedding are not in the checkpoint either.  Unlike the reference
(a silent non-strict load), every trunk tensor must be there with the right shape, else a
:class:`~maggie.models.checkpoint.WeightsError` lists what is missing or mismatched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from maggie.models.maggie.encoder import ShortcutEncoder
from maggie.models.weights import WeightsError

log = logging.getLogger(__name__)

REFERENCE_PATH = "pretrain/model_best_resnet34_En_nomixup.pth"
# The stem conv's input channels differ from ours: the reference deletes these two.
DROPPED = ("conv1.module.weight_bar", "conv1.module.weight_v")
# Ours only: not in a plain encoder checkpoint.
OWN_ONLY_PREFIXES = ("shortcut.", "mask_embed_layer.")


def resolve_pretrained(value: bool | str | None) -> Path | None:
    """``model.<stage>.encoder_args.pretrained``: false/'' -> none, true -> the reference's path, else a path."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return Path(REFERENCE_PATH)
    if isinstance(value, str):
        return Path(value)
    raise WeightsError(f"encoder_args.pretrained must be true, false or a file path, got {value!r}")


def read_encoder_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder tensors of a GCA-Matting checkpoint (``state_dict`` unwrapped, ``module.`` stripped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such pretrained encoder checkpoint (GCA-Matting's "
                           f"model_best_resnet34_En_nomixup.pth; set model.image.encoder_args.pretrained)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state_dict of tensors")
    out = {}
    for key, value in obj.items():
        for prefix in ("module.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_pretrained_encoder(encoder: ShortcutEncoder, path: str | os.PathLike) -> list[str]:
    """Copy the checkpoint's trunk weights into ``encoder``; returns the keys left as initialised."""
    sd = read_encoder_checkpoint(path)
    own = encoder.state_dict()
    trunk = [k for k in own if not k.startswith(OWN_ONLY_PREFIXES) and k not in DROPPED]
    missing = [k for k in trunk if k not in sd]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs ours {tuple(own[k].shape)}"
                  for k in trunk if k in sd and sd[k].shape != own[k].shape]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder keys missing ({', '.join(missing[:6])}"
                         f"{' ...' if len(missing) > 6 else ''})")
        if mismatched:
            parts.append(f"{len(mismatched)} with another shape ({'; '.join(mismatched[:6])}"
                         f"{' ...' if len(mismatched) > 6 else ''})")
        raise WeightsError(f"{path}: not a ResNet-34-D matting encoder checkpoint: " + ", ".join(parts))
    ignored = sorted(set(sd) - set(trunk))
    with torch.no_grad():
        for k in trunk:
            own[k].copy_(sd[k].to(own[k].dtype))
    kept = [k for k in own if k not in trunk]
    log.info("encoder initialised from %s: %d tensors loaded, %d kept from initialisation (stem, shortcuts, "
             "mask embedding), %d checkpoint tensors not used%s", path, len(trunk), len(kept), len(ignored),
             f" ({', '.join(ignored[:4])} ...)" if ignored else "")
    return kept
