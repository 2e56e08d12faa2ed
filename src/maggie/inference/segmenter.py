"""Person masks for an image from an instance-segmentation network exported to ONNX (``maggie masks --segmenter``).

The format read is that of Ultralytics' YOLO segmentation exports (``yolo export model=yolo11n-seg.pt
format=onnx``, also YOLOv8-seg): the most widely used ONNX instance segmenter, a few MB, fast on a CPU
through onnxruntime, with one documented layout across its model sizes:

* input ``[1, 3, S, S]`` float RGB in [0, 1], the image letterboxed (resized to fit, centred, padded
  with grey 114);
* ``output0`` ``[1, 4 + C + M, A]``: per anchor a box (centre x, centre y, width, height in input
  pixels), C class scores (already sigmoid; COCO's person is class 0) and M mask coefficients;
* ``output1`` ``[1, M, S/4, S/4]``: mask prototypes; a detection's mask is
  ``sigmoid(coefficients . prototypes)`` cut to its box.

Only people are kept: scores and sizes above thresholds, overlapping boxes suppressed (NMS), at most
``max_people`` (MaGGIe's 10 instance slots per pass are not a limit of the predictor, but more people than
this in one photo are usually crowd noise).  No weights ship with this project: users export or download
one (see README, "From a video file to mattes").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maggie.inference.masks import InputError
from maggie.inference.onnx_model import open_session


@dataclass(frozen=True)
class SegmenterSettings:
    score: float = 0.4          # person score at or above which a detection is kept
    nms_iou: float = 0.5        # boxes overlapping a better one by more than this IoU are dropped
    min_area: float = 0.002     # smallest mask kept, as a fraction of the image
    max_people: int = 10
    person_class: int = 0       # COCO's 'person'
    mask_threshold: float = 0.5


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The network input ``[1, 3, size, size]``, the scale and the (left, top) padding."""
    h, w = rgb.shape[:2]
    r = min(size / h, size / w)
    nh, nw = round(h * r), round(w * r)
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, r, (left, top)


class OnnxPersonSegmenter:
    """``segmenter(rgb)`` -> binary masks ``[N, H, W]`` uint8 of the people in an RGB image, best first."""

    def __init__(self, model: str | Path, settings: SegmenterSettings | None = None) -> None:
        path = Path(model)
        self.session = open_session(path, InputError, "segmenter model", "--segmenter",
                                    providers=["CPUExecutionProvider"])
        self.settings = settings or SegmenterSettings()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or len(outputs) != 2 or len(outputs[1].shape) != 4:
            raise InputError(f"{path}: not a YOLO segmentation export (one [1, 3, S, S] input, outputs "
                             "[1, 4 + classes + M, anchors] and [1, M, S/4, S/4] expected)")
        self.input_name = inputs[0].name
        self.size = shape[2] if isinstance(shape[2], int) else 640  # dynamic exports: Ultralytics' default

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        s = self.settings
        h, w = rgb.shape[:2]
        x, r, (left, top) = letterbox(rgb, self.size)
        pred, protos = self.session.run(None, {self.input_name: x})
        pred, protos = pred[0].T, protos[0]  # [A, 4 + C + M], [M, mh, mw]
        m = protos.shape[0]
        classes = pred.shape[1] - 4 - m
        if classes <= s.person_class:
            raise InputError(f"segmenter outputs {classes} classes; person class {s.person_class} is not among them")
        scores = pred[:, 4 + s.person_class]
        keep = np.flatnonzero(scores >= s.score)
        if len(keep) == 0:
            return np.zeros((0, h, w), np.uint8)
        boxes = pred[keep, :4]
        xywh = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1)
        chosen = cv2.dnn.NMSBoxes(xywh.tolist(), scores[keep].tolist(), s.score, s.nms_iou)
        chosen = keep[np.asarray(chosen, int).reshape(-1)]
        chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
        mh, mw = protos.shape[1:]
        logits = pred[chosen, 4 + classes:] @ protos.reshape(m, -1)
        soft = (1 / (1 + np.exp(-logits))).reshape(-1, mh, mw).astype(np.float32)
        nh, nw = round(h * r), round(w * r)
        out = []
        for det, prob in zip(chosen, soft, strict=True):
            full = cv2.resize(prob, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            cx, cy, bw, bh = pred[det, :4]
            box = np.zeros_like(full)
            x0, y0 = max(0, int(np.floor(cx - bw / 2))), max(0, int(np.floor(cy - bh / 2)))
            box[y0:int(np.ceil(cy + bh / 2)), x0:int(np.ceil(cx + bw / 2))] = 1
            full = (full * box)[top:top + nh, left:left + nw]
            mask = cv2.resize(full, (w, h), interpolation=cv2.INTER_LINEAR) >= s.mask_threshold
            if mask.mean() >= s.min_area:
                out.append(mask.astype(np.uint8))
            if len(out) == s.max_people:
                break
        return np.stack(out) if out else np.zeros((0, h, w), np.uint8)
