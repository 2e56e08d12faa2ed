"""Guidance masks for a whole video from masks given on its first frame (or on any key frames).

``FlowTracker`` carries every person's mask from one frame to the next with OpenCV's DIS optical
flow, streamed (it holds the previous frame and the current masks, whatever the video's length):

* the backward flow (this frame -> the previous one) pulls each mask forward, so every pixel of the
  new frame takes the label of the point it came from;
* a pixel belongs to one person at most, the one whose carried mask is strongest there, so a person
  walking in front of another takes the pixels they cover from the one behind (the flow of those pixels
  follows the person in front);
* ``anchor(mattes)`` replaces the carried masks by thresholded mattes (the network's prediction for the
  frame), which stops the drift that flow alone accumulates;
* masks given for a later key frame replace the carried ones from that frame on.

``propagate`` is the documented entry point; ``maggie masks`` writes its output in the per-frame
layout ``maggie predict`` reads.

Measured on the three video test splits (``benchmarks/tracker_iou.py``): DIS at full resolution with dense
patches and small frames enlarged to a 512-px side are worth 0.03-0.08 IoU over the plain preset; a
forward-backward consistency check whose failing pixels take their neighbourhood's labels lost 0.04-0.10
(it erodes thin limbs), so occluded pixels keep what the backward flow carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


@dataclass(frozen=True)
class TrackerSettings:
    preset: str = "medium"       # DIS optical flow preset: ultrafast | fast | medium
    fine: bool = True            # DIS down to full resolution with dense patches (slower, closer on thin limbs)
    flow_side: int = 512         # the flow is computed with the longer side resized to this (then resized back)
    threshold: float = 0.5       # carried (and anchoring) values at or above this are the person

    def __post_init__(self) -> None:
        if self.preset not in DIS_PRESETS:
            raise ValueError(f"tracker preset {self.preset!r}: expected one of {', '.join(DIS_PRESETS)}")


@lru_cache(maxsize=4)  # a few frame sizes per process
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of an h x w frame, made once per frame size; read-only to the callers."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _remap(img: np.ndarray, flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """img sampled at x + flow(x) (bilinear, zero outside the frame)."""
    return cv2.remap(img, grid[0] + flow[..., 0], grid[1] + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class FlowTracker:
    """Per-person binary masks ``[N, H, W]`` carried through a video's RGB frames ``[H, W, 3]``."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = settings or TrackerSettings()
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.settings.preset])
        if self.settings.fine:
            self._dis.setFinestScale(0)
            self._dis.setPatchStride(2)
            self._dis.setGradientDescentIterations(50)
            self._dis.setVariationalRefinementIterations(10)
        self._prev: np.ndarray | None = None
        self.masks: np.ndarray | None = None

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        scale = self.settings.flow_side / max(h, w)
        g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        if scale != 1.0:  # small frames are enlarged: DIS's 8-px patches lose limbs a few pixels wide
            g = cv2.resize(g, (max(8, round(w * scale)), max(8, round(h * scale))),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        return g

    def start(self, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Begin (or re-anchor at a key frame) with the given masks of ``frame``."""
        if masks.shape[1:] != frame.shape[:2]:
            raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[1]}, "
                             f"the frame {frame.shape[1]}x{frame.shape[0]}")
        self._prev = self._gray(frame)
        self.masks = (np.asarray(masks) > 0).astype(np.uint8)
        return self.masks

    def anchor(self, mattes: np.ndarray) -> np.ndarray:
        """Replace the carried masks of the current frame by ``mattes >= threshold`` (alphas in [0, 1])."""
        if self.masks is None or mattes.shape != self.masks.shape:
            raise ValueError("anchor: mattes must match the carried masks (start the tracker first)")
        self.masks = (mattes >= self.settings.threshold).astype(np.uint8)
        return self.masks

    def step(self, frame: np.ndarray) -> np.ndarray:
        """The masks of the next frame."""
        if self._prev is None or self.masks is None:
            raise ValueError("step: start the tracker with a frame and its masks first")
        s = self.settings
        cur = self._gray(frame)
        back = self._dis.calc(cur, self._prev, None)  # cur -> prev
        fh, fw = cur.shape
        h, w = frame.shape[:2]
        if (fh, fw) != (h, w):  # the flow at full resolution, in full-resolution pixels
            back = np.ascontiguousarray(cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / fw))
        full = _grid(h, w)
        carried = np.stack([_remap(m.astype(np.float32), back, full) for m in self.masks]) if len(self.masks) else \
            np.zeros((0, h, w), np.float32)
        self.masks = exclusive_masks(carried, s.threshold)
        self._prev = cur
        return self.masks


def exclusive_masks(values: np.ndarray, threshold: float) -> np.ndarray:
    """Binary masks ``[N, H, W]``: each pixel goes to the instance with the largest value, if it reaches threshold."""
    if len(values) == 0:
        return values.astype(np.uint8)
    winner = values.argmax(0)
    out = np.zeros(values.shape, np.uint8)
    for i in range(len(values)):
        out[i] = (winner == i) & (values[i] >= threshold)
    return out


def propagate(frames: Iterable[np.ndarray], keys: dict[int, np.ndarray], settings: TrackerSettings | None = None,
              anchor: Callable[[int, np.ndarray, np.ndarray], np.ndarray | None] | None = None
              ) -> Iterator[np.ndarray]:
    """Masks ``[N, H, W]`` uint8 for every frame, from the masks of key frames (``keys[0]`` must exist).

    ``keys[t]`` replaces the carried masks at frame t (all key frames have the same N people, in the same
    order; an absent person is an empty mask).  ``anchor(t, frame, masks)``, when given, may return the
    frame's mattes ``[N, H, W]`` in [0, 1] (say, the network's prediction guided by ``masks``): the tracker
    carries their thresholded version onward instead of its own masks.
    """
    if 0 not in keys:
        raise ValueError("propagate: masks for the first frame (key frame 0) are needed")
    tracker = FlowTracker(settings)
    for t, frame in enumerate(frames):
        masks = tracker.start(frame, keys[t]) if t in keys else tracker.step(frame)
        yield masks
        if anchor is not None:
            mattes = anchor(t, frame, masks)
            if mattes is not None:
                tracker.anchor(mattes)
