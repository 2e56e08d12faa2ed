"""The flow tracker of ``maggie masks``: it follows moving people, keeps them apart, re-anchors, and the
command writes the layout ``maggie predict`` reads."""

from __future__ import annotations

import numpy as np
import pytest

from maggie.data.mask_sources import mask_iou
from maggie.inference.tracking import FlowTracker, TrackerSettings, exclusive_masks, propagate


def textured(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random texture (the optical flow needs something to follow)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h // 4, w // 4, 3)).astype(np.float32)
    return (cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def scene(t: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Two textured 'people' on a textured background: A moves right 3 px a frame, B stays; A passes in front."""
    frame = textured(h, w, 0)
    person_a, person_b = textured(40, 24, 1), textured(48, 30, 2)
    masks = np.zeros((2, h, w), np.uint8)
    by, bx = 30, 70
    frame[by:by + 48, bx:bx + 30] = person_b
    masks[1, by:by + 48, bx:bx + 30] = 1
    ay, ax = 36, 40 + 3 * t
    frame[ay:ay + 40, ax:ax + 24] = person_a
    masks[0, ay:ay + 40, ax:ax + 24] = 1
    masks[1] &= 1 - masks[0]  # B is behind A
    return frame, masks


def test_tracker_follows_a_moving_person_better_than_keeping_the_first_mask():
    frames, truth = zip(*(scene(t) for t in range(8)), strict=True)
    tracked = list(propagate(frames, {0: truth[0]}))
    assert len(tracked) == 8 and tracked[0].shape == truth[0].shape
    flow = [mask_iou(m[0], g[0]) for m, g in zip(tracked, truth, strict=True)]
    still = [mask_iou(truth[0][0], g[0]) for g in truth]
    assert min(flow[:4]) > 0.8 and min(flow) > 0.5, flow  # flow alone drifts (benchmarks/tracker_iou.json) ...
    assert np.mean(flow[1:]) > np.mean(still[1:]) + 0.2, (flow, still)
    # ... which re-anchoring on every frame's matte stops (here the true one, standing in for the network's).
    anchored = list(propagate(frames, {0: truth[0]}, anchor=lambda t, f, m: truth[t].astype(np.float32)))
    assert min(mask_iou(m[0], g[0]) for m, g in zip(anchored, truth, strict=True)) > 0.9
    # A passes in front of B: B's mask loses the pixels A covers, and no pixel belongs to both.
    assert all(int((m[0] & m[1]).sum()) == 0 for m in tracked)
    assert mask_iou(tracked[-1][1], truth[-1][1]) > 0.7


def test_exclusive_masks_give_each_pixel_to_the_strongest_person_above_threshold():
    values = np.array([[[0.9, 0.6, 0.2]], [[0.3, 0.7, 0.4]]], np.float32)
    out = exclusive_masks(values, 0.5)
    assert out.tolist() == [[[1, 0, 0]], [[0, 1, 0]]]


def test_anchor_and_key_frames_replace_what_the_tracker_carries():
    frames, truth = zip(*(scene(t) for t in range(4)), strict=True)
    tracker = FlowTracker(TrackerSettings(flow_side=128))
    tracker.start(frames[0], truth[0])
    tracker.step(frames[1])
    mattes = np.zeros((2, *truth[0].shape[1:]), np.float32)
    mattes[0, :10, :10] = 0.8
    assert tracker.anchor(mattes).sum() == 100
    seen = []
    keys = {0: truth[0], 2: truth[2]}
    out = list(propagate(frames, keys, anchor=lambda t, f, m: seen.append(t)))
    assert seen == [0, 1, 2, 3]  # asked for every frame; returning None keeps the tracker's own masks
    assert np.array_equal(out[2], truth[2])
    with pytest.raises(ValueError, match="first frame"):
        list(propagate(frames, {1: truth[1]}))


def test_masks_command_writes_what_predict_reads(tmp_path):
    from maggie.cli import main
    from maggie.files import write_image, write_png
    from maggie.inference.inputs import frame_mask_sources, union_names

    frames_dir, first = tmp_path / "frames", tmp_path / "first"
    frames_dir.mkdir()
    first.mkdir()
    for t in range(5):
        frame, masks = scene(t)
        write_image(frames_dir / f"f{t:03d}.png", frame)
        if t == 0:
            for i, m in enumerate(masks):
                write_png(first / f"{i:02d}.png", m * 255)
    out = tmp_path / "tracked"
    args = ["masks", str(frames_dir), "--video", "--first", str(first), "--out", str(out), "--flow-side", "128"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"f{t:03d}" for t in range(5)]
    sources = frame_mask_sources(out, 5, [f"f{t:03d}" for t in range(5)])
    names = union_names(sources)
    assert names == ["00", "01"]
    frames, truth = zip(*(scene(t) for t in range(5)), strict=True)
    expected = list(propagate(frames, {0: truth[0]}, TrackerSettings(flow_side=128)))
    assert all(np.array_equal(src.read(names, (96, 128)), e) for src, e in zip(sources, expected, strict=True))
    assert mask_iou(expected[-1][0], truth[-1][0]) > 0.7
    # Not over an existing result without --overwrite; a bad key-frame name is one clear error.
    assert main(["masks", str(frames_dir), "--video", "--first", str(first), "--out", str(out)]) == 2
    keys = tmp_path / "keys"
    (keys / "nope").mkdir(parents=True)
    assert main(["masks", str(frames_dir), "--video", "--first", str(first), "--keys", str(keys), "--out",
                 str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()
