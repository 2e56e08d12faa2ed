"""The ONNX person segmenter reads a YOLO segmentation export: a small ONNX model with the same input and
outputs as Ultralytics' (``images`` [1, 3, S, S]; ``output0`` [1, 4 + 80 + 32, A]; ``output1`` [1, 32, S/4, S/4]),
built here, stands in for a real one (no weights can be downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

SIZE, CLASSES, M = 320, 80, 32


class FakeYoloSeg(nn.Module):
    """Fixed detections in letterboxed input pixels (the output ignores the image's content)."""

    def __init__(self) -> None:
        super().__init__()
        dets = [  # (cx, cy, w, h, class, score, prototype)
            (100, 160, 60, 120, 0, 0.9, 0),   # a person: prototype 0 is +8 everywhere -> the whole box
            (102, 161, 60, 118, 0, 0.8, 0),   # the same person again, lower score: NMS drops it
            (200, 160, 40, 80, 0, 0.2, 0),    # below the score threshold
            (250, 150, 50, 50, 5, 0.95, 0),   # a bus
            (20, 80, 4, 4, 0, 0.9, 0),        # a person too small to keep
            (240, 170, 48, 96, 0, 0.7, 1),    # a person whose mask is the top of its box (prototype 1)
        ]
        out0 = torch.zeros(1, 4 + CLASSES + M, len(dets))
        for a, (cx, cy, w, h, cls, score, proto) in enumerate(dets):
            out0[0, :4, a] = torch.tensor([cx, cy, w, h], dtype=torch.float32)
            out0[0, 4 + cls, a] = score
            out0[0, 4 + CLASSES + proto, a] = 1.0
        protos = torch.full((1, M, SIZE // 4, SIZE // 4), -8.0)
        protos[0, 0] = 8.0
        protos[0, 1, : 170 // 4] = 8.0  # input rows above y = 170 (at the prototypes' stride 4)
        self.register_buffer("out0", out0)
        self.register_buffer("protos", protos)

    def forward(self, images: torch.Tensor):
        zero = images.mean() * 0
        return self.out0 + zero, self.protos + zero


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "yolo-seg.onnx"
    torch.onnx.export(FakeYoloSeg(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["output0", "output1"])
    return path


def test_people_only_above_thresholds_without_duplicates_in_image_coordinates(model_file):
    from maggie.inference.segmenter import OnnxPersonSegmenter

    seg = OnnxPersonSegmenter(model_file)
    rgb = np.zeros((160, 320, 3), np.uint8)  # letterboxed at scale 1 with 80 px of padding above and below
    masks = seg(rgb)
    assert masks.shape == (2, 160, 320) and masks.dtype == np.uint8
    first = np.zeros((160, 320), np.uint8)
    first[100 - 80:220 - 80, 70:130] = 1  # box y 100..220 in the input, less the 80 px of padding
    assert np.abs(masks[0].astype(int) - first).sum() <= 2 * (120 + 60)  # up to a pixel of resampling per edge
    ys, xs = np.nonzero(masks[1])
    assert 215 <= xs.min() <= 217 and 263 <= xs.max() <= 265, "the box's columns"
    assert 41 <= ys.min() <= 43 and 86 <= ys.max() <= 91, "from the box's top (y 122) to prototype 1's edge (y 170)"
    # A score threshold above the second person keeps only the first.
    from maggie.inference.segmenter import SegmenterSettings

    assert len(OnnxPersonSegmenter(model_file, SegmenterSettings(score=0.75))(rgb)) == 1


def test_a_file_that_is_not_a_segmenter_is_one_clear_error(tmp_path, model_file):
    from maggie.cli import main
    from maggie.inference.masks import InputError
    from maggie.inference.segmenter import OnnxPersonSegmenter

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="bad.onnx: not a readable ONNX model"):
        OnnxPersonSegmenter(bad)
    with pytest.raises(InputError, match="no such segmenter"):
        OnnxPersonSegmenter(tmp_path / "missing.onnx")
    img = tmp_path / "photo.png"
    from maggie.files import write_image

    write_image(img, np.zeros((160, 320, 3), np.uint8))
    out = tmp_path / "masks"
    assert main(["masks", str(img), "--segmenter", str(model_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "photo").iterdir()) == ["00.png", "01.png"]
    assert main(["masks", str(img), "--segmenter", str(bad), "--out", str(tmp_path / "m2")]) == 2


@pytest.fixture(scope="module")
def image_weights(tmp_path_factory):
    from maggie.models.maggie.network import MaGGIe, MaggieConfig
    from maggie.models.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "image.safetensors"
    save_weights(MaGGIe(MaggieConfig(arch="maggie_image")).eval(), path)
    return path


def test_predict_masks_auto_segments_images_and_tracks_videos(tmp_path, model_file, image_weights):
    import cv2

    from maggie.cli import main
    from maggie.files import write_image

    rng = np.random.default_rng(0)
    write_image(tmp_path / "photo.png", rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    common = ["--segmenter", str(model_file), "--weights", str(image_weights), "--short-size", "64"]
    out = tmp_path / "auto"
    assert main(["predict", str(tmp_path / "photo.png"), "--masks", "auto", *common, "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "masks" / "photo").iterdir()) == ["00.png", "01.png"]
    assert sorted(p.name for p in (out / "alpha" / "photo").iterdir()) == ["00.png", "01.png"]
    # The same as predicting with those masks given by hand.
    again = tmp_path / "given"
    assert main(["predict", str(tmp_path / "photo.png"), "--masks", str(out / "masks" / "photo"), "--weights",
                 str(image_weights), "--short-size", "64", "--out", str(again)]) == 0
    for name in ("00.png", "01.png"):
        a = cv2.imread(str(out / "alpha" / "photo" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(again / "alpha" / "photo" / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, b)
    # A video: the segmenter's people on the first frame, tracked (re-anchored by the network) to the end.
    vw = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for _ in range(4):
        vw.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    vw.release()
    vout = tmp_path / "vauto"
    assert main(["predict", str(tmp_path / "clip.mp4"), "--masks", "auto", *common, "--out", str(vout)]) == 0
    assert sorted(p.name for p in (vout / "masks").iterdir()) == [f"{i:05d}" for i in range(4)]
    assert len(list((vout / "alpha").iterdir())) == 4
    # Without a segmenter or first-frame masks, 'auto' is one clear error and writes nothing.
    assert main(["predict", str(tmp_path / "photo.png"), "--masks", "auto", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
