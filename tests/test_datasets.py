"""Training loaders over the published layouts: shapes, slots, determinism, and bad data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import repo_params

from maggie.data.layout import DataError
from maggie.data.train_sets import ImageTrainDataset, TrainDataConfig, VideoTrainDataset

H, W = 96, 128


def figure_alpha(i: int, shift: int = 0) -> np.ndarray:
    a = np.zeros((H, W), np.uint8)
    x = 8 + 36 * i + shift
    a[16:90, x:x + 28] = 255
    a[16:90, x + 28:x + 32] = 120  # a soft edge
    return a


def write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def image_layout(root: Path, count: int = 3, people: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for k in range(count):
        write(root / "images" / f"{k:04d}.jpg", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        for i in range(people):
            write(root / "alphas" / f"{k:04d}" / f"{i:02d}.png", figure_alpha(i))
    return root


def video_layout(root: Path, frames: int = 6, people: int = 2) -> Path:
    rng = np.random.default_rng(1)
    for t in range(frames):
        write(root / "fgr" / "v0" / f"{t:05d}.jpg", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        for i in range(people):
            write(root / "pha" / "v0" / f"{t:05d}" / f"{i:02d}.png", figure_alpha(i, shift=2 * t))
    return root


def cfg(**kw) -> TrainDataConfig:
    base = {**repo_params()["dataset"]["train"]["video"], "crop": [64, 64], "short_size": 96, "max_inst": 10,
            "clip_length": 3, "max_step_size": 2}
    return TrainDataConfig(**{**base, **kw})


def test_image_sample_shapes_slots_and_determinism(tmp_path):
    ds = ImageTrainDataset(image_layout(tmp_path / "I-HIM50K"), cfg())
    s = ds.sample(1, 7)
    assert s["image"].shape == (1, 3, 64, 64) and s["alpha"].shape == s["mask"].shape == (1, 10, 64, 64)
    used = s["alpha"].flatten(2).amax(-1)[0] > 0
    assert 1 <= int(used.sum()) <= 3, "the crop holds some of the three people, in their slots"
    assert not (s["mask"].flatten(2).amax(-1)[0][~used] > 0).any(), "guidance only in slots with an alpha"
    assert set(np.unique(s["mask"].numpy())) <= {0.0, 1.0}
    again = ds.sample(1, 7)
    for k in s:
        assert torch.equal(s[k], again[k]), k
    slot_sets = {tuple(np.nonzero(ds.sample(1, seed)["alpha"].flatten(2).amax(-1)[0].numpy())[0])
                 for seed in range(8)}
    assert len(slot_sets) > 1, "instances land in random ID slots"


def test_more_instances_than_slots_are_subsampled(tmp_path):
    ds = ImageTrainDataset(image_layout(tmp_path / "I", count=1, people=3), cfg(max_inst=2, crop=[96, 128]))
    s = ds.sample(0, 3)
    assert s["alpha"].shape[1] == 2 and int((s["alpha"].flatten(2).amax(-1)[0] > 0).sum()) <= 2


def test_video_clip(tmp_path):
    ds = VideoTrainDataset(video_layout(tmp_path / "V-HIM2K5"), cfg())
    s = ds.sample(0, 5)
    assert s["image"].shape == (3, 3, 64, 64) and s["alpha"].shape == (3, 10, 64, 64)
    assert s["transition"].shape == (3, 10, 64, 64)
    assert torch.all(s["transition"][0] == 1), "the first frame's change map is all ones"


@pytest.mark.parametrize("defect,needle", [
    ("size", "alpha is 64x48"),
    ("missing", "no alpha mattes"),
    ("unreadable", "not a readable image"),
])
def test_bad_data_is_one_line_or_skipped_and_counted(tmp_path, defect, needle):
    root = image_layout(tmp_path / "I", count=3)
    bad = root / "images" / "0001.jpg"
    if defect == "size":
        write(root / "alphas" / "0001" / "01.png", np.zeros((48, 64), np.uint8))
    elif defect == "missing":
        for f in (root / "alphas" / "0001").iterdir():
            f.unlink()
    else:
        bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as info:
        ImageTrainDataset(root, cfg(on_bad_sample="error")).sample(1, 0)
    msg = str(info.value)
    assert needle in msg and "0001" in msg and "\n" not in msg
    ds = ImageTrainDataset(root, cfg(on_bad_sample="skip"))
    s = ds.sample(1, 0)  # replaced by a good sample
    assert ds.skipped >= 1 and s["alpha"].sum() > 0


def test_unknown_policy_and_missing_layout(tmp_path):
    with pytest.raises(ValueError, match="on_bad_sample"):
        ImageTrainDataset(image_layout(tmp_path / "I"), cfg(on_bad_sample="ignore"))
    with pytest.raises(DataError, match="I-HIM50K layout"):
        ImageTrainDataset(tmp_path / "nothing", cfg())


def test_video_guidance_dropout_cuts_rectangles():
    from maggie.data.augment import mask_dropout

    masks = np.zeros((3, 3, 96, 96), np.uint8)
    masks[:, :, 10:80, 20:70] = 1
    changed = 0
    for seed in range(20):
        out = mask_dropout(masks, np.random.default_rng(seed))
        assert out.shape == masks.shape and (out <= masks).all(), "dropout only removes guidance"
        changed += int((out != masks).any())
    assert 0 < changed < 20, "about half the clips lose a few rectangles"


def test_tracker_guidance_follows_the_people_and_is_off_at_zero():
    from types import SimpleNamespace

    from maggie.data.augment import guidance_masks, mask_dropout, simulated_guidance
    from maggie.data.mask_sources import mask_iou

    alphas = np.stack([np.stack([figure_alpha(i, shift=2 * t) / 255.0 for i in range(3)]) for t in range(3)])
    base = dict(simulated_guidance_p=1.0, binarized_kernel=8, downscale_mask_p=0.5, tracker_guidance_p=0.0)
    tracking = SimpleNamespace(**{**base, "tracker_guidance_p": 1.0})
    tracked = guidance_masks(alphas, tracking, np.random.default_rng(0), True)
    assert tracked.shape == alphas.shape and set(np.unique(tracked)) <= {0, 1}
    ious = [mask_iou(tracked[t, i], alphas[t, i] > 0.5) for t in range(3) for i in range(3)]
    assert min(ious[:3]) > 0.85 and np.mean(ious) > 0.6, "started on the true masks (its own threshold), then drifting"
    # At 0 the tracker draws nothing: the guidance is exactly what it was without the option.
    zero = guidance_masks(alphas, SimpleNamespace(**base), np.random.default_rng(1), True)
    rng = np.random.default_rng(1)
    rng.random()  # the draw between the simulated segmenter and the reference's noise
    assert np.array_equal(zero, mask_dropout(simulated_guidance(alphas, rng), rng))
    images = guidance_masks(alphas, tracking, np.random.default_rng(1), False)
    assert np.array_equal(images, guidance_masks(alphas, SimpleNamespace(**base), np.random.default_rng(1), False))
