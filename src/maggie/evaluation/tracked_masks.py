"""Guidance for the video evaluation made by this project's own tracker (``maggie masks``), as another
mask source beside the test data's (``test.video.mask_dir``).

Each test video starts from its true first-frame masks (alpha > 0.5: a first-frame mask given by the
user, as V-HIM60's XMem masks start from the first frame's truth) and is carried to its end along DIS
optical flow; ``flow_network`` also re-anchors the tracker on the image stage's matte of every frame,
as ``maggie masks --weights`` does.  The masks are written in the V-HIM60 mask layout
(``<out>/<split>/<video>/<frame>/NN.png``), which ``evaluate_videos(mask_root=...)`` reads, with
``summary.json``: per split, the mean IoU of the tracked masks with the true masks, and the time taken.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from maggie.config.params import section
from maggie.data.layout import VideoTestSet
from maggie.data.mask_sources import mask_iou
from maggie.files import write_json, write_png
from maggie.inference.tracking import TrackerSettings, propagate

log = logging.getLogger("maggie.evaluation")
TRACKERS = ("flow", "flow_network")


def track_frames(frames, settings: TrackerSettings, predictor=None) -> list[np.ndarray]:
    """Masks ``[N, H, W]`` for every frame of a test video, from its true first-frame masks."""
    first = (frames[0].alphas > 0.5).astype(np.uint8)
    anchor = None
    if predictor is not None:
        def anchor(t, frame, masks):
            return predictor.image(frame, masks)
    return list(propagate((f.image for f in frames), {0: first}, settings, anchor))


def mean_iou(masks: list[np.ndarray], frames) -> float:
    """IoU with the true masks (alpha > 0.5), per person present in either, over all frames."""
    ious = [mask_iou(m, (a > 0.5)) for ms, f in zip(masks, frames, strict=True)
            for m, a in zip(ms, f.alphas, strict=True) if m.any() or (a > 0.5).any()]
    return float(np.mean(ious)) if ious else 1.0


def write_tracked_masks(params: dict[str, Any], tracker: str, out: Path, predictor=None) -> dict[str, Any]:
    """Track every video of every split of ``test.video``; write the masks and ``summary.json`` under ``out``."""
    if tracker not in TRACKERS:
        raise ValueError(f"tracker {tracker!r}: expected one of {', '.join(TRACKERS)}")
    if tracker == "flow_network" and predictor is None:
        raise ValueError("tracker flow_network needs the image network (a predictor)")
    vid = section(params, "test.video")
    settings = TrackerSettings()
    summary: dict[str, Any] = {"tracker": tracker, "settings": settings.__dict__, "splits": {}}
    for split in vid["splits"]:
        data = VideoTestSet(section(params, "data")["root"], vid["dir"], split, vid["mask_dir"])
        t0, ious, count = time.time(), [], 0
        for video in data.videos:
            frames = data.frames(video)
            masks = track_frames(frames, settings, predictor if tracker == "flow_network" else None)
            people = frames[0].people  # the truth's NN.png names, the tracker's people
            for frame, ms in zip(frames, masks, strict=True):
                for name, m in zip(people, ms, strict=True):
                    write_png(out / split / video / frame.name / name, m * np.uint8(255))
            ious.append(mean_iou(masks, frames))
            count += len(frames)
        summary["splits"][split] = {"mean_iou": float(np.mean(ious)), "videos": len(data.videos), "frames": count,
                                    "seconds": round(time.time() - t0, 2)}
        log.info("%s %s: IoU with the true masks %.3f over %d frames", tracker, split, np.mean(ious), count)
    write_json(out / "summary.json", summary)
    return summary
