"""`maggie export --onnx`: the image network in onnxruntime equals PyTorch, at other sizes and instance counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maggie.cli import main
from maggie.models import MaGGIe, MaggieConfig, load_model, save_weights

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def masks_for(n: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(1, n, h, w)
    for i in range(n):
        x0 = (i * w) // n
        m[0, i, h // 5: h - h // 8, x0 + 2: x0 + w // n - 2] = 1
        m[0, i, h // 5: h // 5 + 6, x0: x0 + w // n] = 1  # arms touching the neighbours
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    weights = d / "image.safetensors"
    model = MaGGIe(MaggieConfig()).eval()
    # Unit gain on the OS8 kernels: random weights then give mattes spread over [0, 1] (a
    # meaningful comparison), not the near-constant 0.5 of the training initialisation.
    torch.nn.init.ones_(model.decoder.refine_OS8.decoder_norm.weight)
    save_weights(model, weights)
    assert main(["export", "--onnx", str(d / "maggie.onnx"), "--weights", str(weights)]) == 0
    return d / "maggie.onnx", weights


@pytest.mark.parametrize("n,h,w", [(3, 128, 160), (1, 96, 96), (5, 160, 128)])
def test_onnxruntime_matches_pytorch(exported, n, h, w):
    path, weights = exported
    model = load_model(weights, refine_mode="dense")
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(n))
    masks = masks_for(n, h, w)
    with torch.no_grad():
        ref = model(image[:, None], masks[:, None])["alpha"][:, 0].numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["alpha"], {"image": image.numpy(), "masks": masks.numpy()})
    assert got.shape == (1, n, h, w)
    assert ref.std() > 0.1 and ((ref > 0.05) & (ref < 0.95)).mean() > 0.01, "a matte worth comparing"
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_export_refuses_the_video_network(tmp_path, capsys):
    weights = tmp_path / "video.safetensors"
    save_weights(MaGGIe(MaggieConfig(arch="maggie_video")).eval(), weights)
    assert main(["export", "--onnx", str(tmp_path / "v.onnx"), "--weights", str(weights)]) == 2
    assert "image network" in capsys.readouterr().err
    assert not (tmp_path / "v.onnx").exists()


def test_predict_runs_the_exported_network_in_onnxruntime(exported, tmp_path):
    """`maggie predict --weights model.onnx` gives the PyTorch network's mattes (dense path), 12 people included
    (groups of 10, as the PyTorch network runs them)."""
    import cv2

    from maggie.files import write_image, write_png

    path, weights = exported
    rng = np.random.default_rng(0)
    h, w = 96, 288
    write_image(tmp_path / "photo.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    for i, m in enumerate(masks_for(12, h, w)[0].numpy().astype(np.uint8)):
        write_png(tmp_path / "masks" / f"{i:02d}.png", m * 255)
    outs = {}
    for name, wfile in (("onnx", path), ("torch", weights)):
        args = ["predict", str(tmp_path / "photo.png"), "--masks", str(tmp_path / "masks"), "--weights", str(wfile),
                "--short-size", "96", "--out", str(tmp_path / name)]
        assert main(args) == 0
        outs[name] = np.stack([cv2.imread(str(tmp_path / name / "alpha" / "photo" / f"{i:02d}.png"), 0)
                               for i in range(12)]).astype(int)
    assert outs["onnx"].std() > 10
    assert np.abs(outs["onnx"] - outs["torch"]).max() <= 2  # the sparse and dense paths agree to 8-bit rounding
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    assert main(["predict", str(tmp_path / "photo.png"), "--masks", str(tmp_path / "masks"), "--weights", str(bad),
                 "--out", str(tmp_path / "x")]) == 2
