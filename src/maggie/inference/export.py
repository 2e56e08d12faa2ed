"""ONNX export of the image network (dense refinement path), which spconv makes impossible upstream.

    maggie export --onnx maggie.onnx [--weights W]

The graph takes ``image`` ``[1, 3, H, W]`` (ImageNet-normalised, H and W multiples of 32) and
``masks`` ``[1, N, H, W]`` (binary, 1 <= N <= 10) and returns ``alpha`` ``[1, N, H, W]``; H, W
and N are dynamic.  Pre/post-processing (resize, pad, restore) stays in Python
(``maggie.inference``), as for the PyTorch model.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from maggie.files import atomic_write
from maggie.models import MaGGIe, load_model

log = logging.getLogger("maggie.export")


class ImageMatting(nn.Module):
    """Single-image view of the network with plain tensor inputs and output."""

    def __init__(self, model: MaGGIe):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.model(image[:, None], masks[:, None])["alpha"][:, 0]


def export_model(model: MaGGIe, path: str | Path, opset: int = 17, example_size: tuple[int, int] = (320, 320),
                 example_instances: int = 3) -> Path:
    if model.is_video:
        raise ValueError("ONNX export covers the image network; pass image weights (maggie_image)")
    model = model.eval()
    model.set_refine_mode("dense")
    wrapper = ImageMatting(model).eval()
    h, w = example_size
    image = torch.randn(1, 3, h, w)
    masks = torch.zeros(1, example_instances, h, w)
    for i in range(example_instances):
        x0 = (i * w) // example_instances
        masks[0, i, h // 6: h - h // 6, x0 + w // 24: x0 + w // example_instances - w // 24] = 1
    path = Path(path)

    def write(tmp: Path) -> None:
        # The tracer notes the Python-level branches (empty-mask shortcuts); the graph keeps the
        # general path, which computes the same mattes for inputs with at least one person.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (image, masks), str(tmp), dynamo=False, opset_version=opset,
                input_names=["image", "masks"], output_names=["alpha"],
                dynamic_axes={"image": {2: "height", 3: "width"},
                              "masks": {1: "instances", 2: "height", 3: "width"},
                              "alpha": {1: "instances", 2: "height", 3: "width"}})

    atomic_write(path, write)
    log.info("wrote %s (opset %d)", path, opset)
    return path


def export_onnx(weights: str | None, out: str | Path, models_dir: str | Path = "models", opset: int = 17) -> Path:
    from maggie.inference.predictor import newest_trained_weights

    source = weights if weights is not None else newest_trained_weights(models_dir)
    return export_model(load_model(source, refine_mode="dense"), out, opset=opset)
