"""The image network exported by ``maggie export`` run through onnxruntime (``maggie predict --weights model.onnx``).

``OnnxImageNetwork`` answers the calls the predictor makes of a PyTorch network (``model(image, mask)`` with
``[B=1, T=1, ...]`` tensors, returning ``{"alpha": ...}``), so pre- and post-processing are shared; more than
10 people run in groups of 10, as the PyTorch network does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from maggie.errors import WeightsError

GROUP = 10  # the exported graph's instance slots


@dataclass(frozen=True)
class _Config:
    arch: str = "maggie_image (onnx)"


def open_session(path: str | Path, error: type[Exception], kind: str, needed_by: str, providers=None):
    """An onnxruntime session for a user's model file; every way it can fail is one ``error`` naming the file.

    ``providers``: onnxruntime's execution providers (None: every one available, a GPU's first).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise error(f"{needed_by} needs onnxruntime: pip install onnxruntime") from exc
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {kind} file")
    try:
        return ort.InferenceSession(str(path), providers=providers or ort.get_available_providers())
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise error(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:80]})") from exc


class OnnxImageNetwork:
    is_video = False

    def __init__(self, path: str | Path) -> None:
        self.session = open_session(path, WeightsError, "ONNX", "an .onnx network")
        names = [i.name for i in self.session.get_inputs()]
        if names != ["image", "masks"]:
            raise WeightsError(f"{path}: inputs {names}; expected ['image', 'masks'] (a `maggie export` file)")
        self.cfg = _Config()

    def eval(self) -> OnnxImageNetwork:
        return self

    def to(self, device) -> OnnxImageNetwork:
        return self

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """image ``[1, 1, 3, H, W]``, mask ``[1, 1, N, H, W]`` -> ``{"alpha": [1, 1, N, H, W]}``."""
        img = image[:, 0].detach().cpu().numpy().astype(np.float32)
        masks = mask[:, 0].detach().cpu().numpy().astype(np.float32)
        parts = [self.session.run(["alpha"], {"image": img, "masks": masks[:, i:i + GROUP]})[0]
                 for i in range(0, masks.shape[1], GROUP)]
        return {"alpha": torch.from_numpy(np.concatenate(parts, axis=1))[:, None]}
