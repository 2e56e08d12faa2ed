"""The plain inference API: ``Predictor(weights).image(rgb, masks)`` and ``.video(frames)``.

    from maggie import Predictor
    p = Predictor("models/image/best.safetensors")       # or a hub id, or None: newest trained
    alphas = p.image(rgb_uint8, masks)                     # [N, H, W] float32 in [0, 1]
    for alphas in p.video(zip(frames, masks_per_frame)):   # streamed, bounded memory
        ...

Images are processed at ``short_size`` (padded to a multiple of 32) and the mattes returned
at the input's size.  Videos go through sliding clips as in the reference (the video network)
or frame by frame (the image network).  A person whose mask is empty in a frame gets a zero
matte there.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from maggie.inference.pipeline import predict_frames, predict_video
from maggie.models import WeightsError, load_model
from maggie.runtime import pick_device

log = logging.getLogger("maggie.predict")

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def newest_trained_weights(models_dir: str | Path = "models") -> Path:
    """The most recent ``best.safetensors`` the DAG trained (video stage or image stage)."""
    found = sorted(Path(models_dir).glob("*/best.safetensors"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise WeightsError(f"{models_dir}: no trained weights; run 'dvc repro' to train them, or pass --weights "
                           "with a checkpoint file or a hub id (e.g. chuonghm/maggie-image-him50k-cvpr24)")
    return found[-1]


class Predictor:
    def __init__(self, weights: str | Path | dict | None = None, short_size: int = 576, device: str = "auto",
                 precision: str = "fp32", clip_length: int = 3, models_dir: str | Path = "models",
                 refine_mode: str = "sparse", merge_duplicates: bool = True, sum_to_one: bool | str = False,
                 meeting_short_size: int | None = None, meeting_radius: int = 4):
        """``merge_duplicates``: people given identical masks get one matte (the network cannot tell them apart).
        ``sum_to_one``: where the people's mattes add up to more than 1, True scales them down alike,
        ``"guided"`` those outside their masks first (``pipeline.limit_sum``; not in the reference).
        ``meeting_short_size``: videos also run at this short side where people meet (``pipeline.predict_video``)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.device = pick_device(device)
        self.dtype = PRECISIONS[precision]
        if self.dtype is torch.float16 and self.device.type == "cpu":
            raise ValueError("fp16 needs a GPU (cuda or mps); use fp32 or bf16 on the CPU")
        self.weights = weights if weights is not None else newest_trained_weights(models_dir)
        if isinstance(self.weights, (str, Path)) and str(self.weights).lower().endswith(".onnx"):
            from maggie.inference.onnx_model import OnnxImageNetwork  # `maggie export`'s graph, on onnxruntime

            self.device, self.dtype = torch.device("cpu"), None  # onnxruntime holds its own device and precision
            self.model = OnnxImageNetwork(self.weights)
        else:
            self.model = load_model(self.weights, device=self.device, refine_mode=refine_mode)
        self.short_size, self.clip_length = short_size, clip_length
        self.merge_duplicates, self.sum_to_one = merge_duplicates, sum_to_one
        self.meeting_short_size, self.meeting_radius = meeting_short_size, meeting_radius
        log.info("weights %s (%s) on %s, %s", self.weights if not isinstance(self.weights, dict) else "state_dict",
                 self.model.cfg.arch, self.device, precision)

    @property
    def is_video_model(self) -> bool:
        return self.model.is_video

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def image(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """uint8 RGB ``[H, W, 3]`` and binary masks ``[N, H, W]`` -> mattes ``[N, H, W]`` float32."""
        if masks.shape[0] == 0:
            return np.zeros((0, *image.shape[:2]), np.float32)
        with self._autocast():
            pred = predict_frames(self.model, image[None], masks[None], self.short_size, self.device,
                                  merge_duplicates=self.merge_duplicates, sum_to_one=self.sum_to_one)[0]
        return zero_empty(pred, masks)

    def video(self, frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Stream of (RGB frame, masks ``[N, H, W]``) -> stream of mattes ``[N, H, W]``, one per frame."""
        for _, _, alphas in self.video_with_inputs(frames):
            yield alphas

    def video_with_inputs(self, frames: Iterable[tuple[np.ndarray, np.ndarray]]
                          ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """As ``video`` but yields (frame, masks, mattes): inputs are held only until their matte is out."""
        count, t0 = 0, time.time()
        waiting: deque[tuple[np.ndarray, np.ndarray]] = deque()  # a clip's worth at most

        def remember(stream):
            for frame, masks in stream:
                waiting.append((frame, masks))
                yield frame, masks

        with self._autocast():
            if self.is_video_model:
                outs = predict_video(self.model, remember(frames), self.short_size, self.device, self.clip_length,
                                     sum_to_one=self.sum_to_one, meeting_short_size=self.meeting_short_size,
                                     meeting_radius=self.meeting_radius)
            else:
                outs = (self.image(f, m) for f, m in remember(frames))
            for pred in outs:
                frame, masks = waiting.popleft()
                yield frame, masks, zero_empty(pred, masks)
                count += 1
        if count:
            seconds = max(time.time() - t0, 1e-9)
            log.info("%d frames in %.1f s (%.2f frames/s)", count, seconds, count / seconds)


def zero_empty(pred: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Instances without any mask pixel in this frame get an all-zero matte."""
    empty = masks.reshape(masks.shape[0], -1).max(1) == 0
    if empty.any():
        pred = pred.copy()
        pred[empty] = 0
    return pred.astype(np.float32, copy=False)
