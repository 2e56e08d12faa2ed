"""`maggie predict` and `maggie.Predictor`: every input form, every output form, streaming, bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from maggie import Predictor
from maggie.cli import main
from maggie.models import MaGGIe, MaggieConfig, save_weights

H, W = 64, 96


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    out = {}
    for arch in ("maggie_image", "maggie_video"):
        model = MaGGIe(MaggieConfig(arch=arch)).eval()
        out[arch] = d / f"{arch}.safetensors"
        save_weights(model, out[arch])
    return out


def people(n: int, t: int = 0) -> np.ndarray:
    """n rectangles side by side, drifting right with t."""
    m = np.zeros((n, H, W), np.uint8)
    for i in range(n):
        x = 6 + i * 28 + t
        m[i, 10:58, x:x + 20] = 1
    return m


def rgb_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def write_instance_masks(folder: Path, masks: np.ndarray) -> None:
    for i, m in enumerate(masks):
        write_png(folder / f"{i:02d}.png", m * 255)


def id_map(masks: np.ndarray) -> np.ndarray:
    out = np.zeros(masks.shape[1:], np.uint8)
    for i, m in enumerate(masks):
        out[m > 0] = i + 1
    return out


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


def read_alpha(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def predict(*args: str) -> int:
    return main(["predict", *args, "--short-size", "64"])


def test_single_image_with_three_people(tmp_path, weights):
    write_png(tmp_path / "photo.jpg", rgb_image(0))
    write_instance_masks(tmp_path / "masks", people(3))
    out = tmp_path / "out"
    assert predict(str(tmp_path / "photo.jpg"), "--masks", str(tmp_path / "masks"), "--out", str(out),
                   "--weights", str(weights["maggie_image"]), "--outputs", "alpha,rgba,overlay,composite") == 0
    for i in range(3):
        assert read_alpha(out / "alpha" / "photo" / f"{i:02d}.png").shape == (H, W)
        assert read_alpha(out / "rgba" / "photo" / f"{i:02d}.png").shape == (H, W, 4)
    assert read_alpha(out / "overlay" / "photo.png").shape == (H, W, 3)
    assert read_alpha(out / "composite" / "photo.png").shape == (H, W, 3)
    assert not list(tmp_path.glob(".out.partial*")), "the staging folder is removed"


def test_id_maps_and_instance_folders_give_the_same_mattes(tmp_path, weights):
    images = tmp_path / "images"
    for k in range(2):
        write_png(images / f"img{k}.png", rgb_image(k))
        write_instance_masks(tmp_path / "folders" / f"img{k}", people(2 + k))
        write_png(tmp_path / "idmaps" / f"img{k}.png", id_map(people(2 + k)))
    for kind in ("folders", "idmaps"):
        assert predict(str(images), "--masks", str(tmp_path / kind), "--out", str(tmp_path / f"out_{kind}"),
                       "--weights", str(weights["maggie_image"]), "--outputs", "alpha") == 0
    for k in range(2):
        a = sorted((tmp_path / "out_folders" / "alpha" / f"img{k}").glob("*.png"))
        b = sorted((tmp_path / "out_idmaps" / "alpha" / f"img{k}").glob("*.png"))
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 2 + k
        for pa, pb in zip(a, b, strict=True):
            np.testing.assert_array_equal(read_alpha(pa), read_alpha(pb))


def test_masks_of_another_size_are_resized(tmp_path, weights, caplog):
    write_png(tmp_path / "photo.png", rgb_image(1))
    small = people(2)[:, ::2, ::2]
    write_instance_masks(tmp_path / "masks" / "photo", small)
    assert predict(str(tmp_path / "photo.png"), "--masks", str(tmp_path / "masks"), "--out", str(tmp_path / "o"),
                   "--weights", str(weights["maggie_image"])) == 0
    assert read_alpha(tmp_path / "o" / "alpha" / "photo" / "01.png").shape == (H, W)
    assert "resizing" in caplog.text


def make_video(tmp_path: Path, t: int = 7, late: bool = True) -> tuple[Path, Path]:
    frames = [rgb_image(10 + i) for i in range(t)]
    write_video(tmp_path / "clip.mp4", frames)
    for i in range(t):
        m = people(3, t=i)
        if late and i < 3:
            m[2] = 0  # person 3 enters at frame 3
        if i == 5:
            m[0] = 0  # person 1 is lost for one frame
        write_instance_masks(tmp_path / "vmasks" / f"{i:05d}", m)
    return tmp_path / "clip.mp4", tmp_path / "vmasks"


def test_video_outputs_and_chunk_independence(tmp_path, weights):
    clip, masks = make_video(tmp_path)
    outs = {}
    for chunk in ("1", "5"):
        out = tmp_path / f"out{chunk}"
        assert predict(str(clip), "--masks", str(masks), "--out", str(out), "--weights",
                       str(weights["maggie_video"]), "--chunk", chunk,
                       "--outputs", "alpha,alpha_video,composite,overlay", "--background", "0,0,255") == 0
        outs[chunk] = out
    frames = sorted((outs["1"] / "alpha").iterdir())
    assert len(frames) == 7
    for f in frames:
        for p in sorted(f.glob("*.png")):
            np.testing.assert_array_equal(read_alpha(p), read_alpha(outs["5"] / "alpha" / f.name / p.name))
    # Empty masks give zero mattes: person 3 before frame 3, person 1 at frame 5.
    assert read_alpha(outs["1"] / "alpha" / "00000" / "02.png").max() == 0
    assert read_alpha(outs["1"] / "alpha" / "00005" / "00.png").max() == 0
    for name in ("composite.mp4", "overlay.mp4", "alpha_videos/00.mp4", "alpha_videos/02.mp4"):
        cap = cv2.VideoCapture(str(outs["1"] / name))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7, name
        cap.release()


def test_predictor_api_streams_video_and_matches_image_path(weights):
    p = Predictor(weights["maggie_image"], short_size=64)
    img, masks = rgb_image(3), people(2)
    single = p.image(img, masks)
    assert single.shape == (2, H, W) and single.dtype == np.float32 and 0 <= single.min() <= single.max() <= 1
    streamed = list(p.video(iter([(img, masks), (img, masks)])))
    np.testing.assert_array_equal(streamed[0], single)
    pv = Predictor(weights["maggie_video"], short_size=64)
    clip = [(rgb_image(20 + i), people(2, t=i)) for i in range(5)]
    out = list(pv.video(iter(clip)))
    assert len(out) == 5 and all(o.shape == (2, H, W) for o in out)


def test_limit_sum_scales_only_where_the_mattes_add_up_to_more_than_one():
    from maggie.inference.pipeline import limit_sum

    a = np.zeros((3, 2, 2), np.float32)
    a[:, 0, 0] = [0.9, 0.6, 0.0]     # 1.5: scaled to 0.6, 0.4
    a[:, 0, 1] = [0.5, 0.3, 0.1]     # 0.9: left as it is
    a[:, 1, 1] = [1.0, 1.0, 1.0]     # 3.0: a third each
    out = limit_sum(a)
    np.testing.assert_allclose(out[:, 0, 0], [0.6, 0.4, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 0, 1], a[:, 0, 1])
    np.testing.assert_allclose(out[:, 1, 1], [1 / 3] * 3, rtol=1e-6)
    assert out.dtype == np.float32 and out.sum(0).max() <= 1 + 1e-6


def test_guided_limit_takes_the_excess_from_people_outside_their_masks():
    from maggie.inference.pipeline import apply_sum_rule, limit_sum

    a = np.zeros((3, 2, 2), np.float32)
    m = np.zeros((3, 2, 2), bool)
    a[:, 0, 0], m[:, 0, 0] = [0.9, 0.6, 0.0], [True, False, False]   # the unguided 0.6 gives way: 0.1 left
    a[:, 0, 1], m[:, 0, 1] = [1.0, 1.0, 0.5], [True, True, False]    # guided alone exceed 1: halved; 0.5 -> 0
    a[:, 1, 0], m[:, 1, 0] = [0.7, 0.7, 0.0], [False, False, False]  # nobody guided: scaled alike
    a[:, 1, 1], m[:, 1, 1] = [0.5, 0.3, 0.1], [False, True, False]   # 0.9: left as it is
    out = limit_sum(a, m)
    np.testing.assert_allclose(out[:, 0, 0], [0.9, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 1], [0.5, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[:, 1, 0], [0.5, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1, 1], a[:, 1, 1])
    assert out.dtype == np.float32 and out.sum(0).max() <= 1 + 1e-6
    np.testing.assert_array_equal(apply_sum_rule(a, m, False), a)
    np.testing.assert_array_equal(apply_sum_rule(a, m, True), limit_sum(a))
    with pytest.raises(ValueError, match="sum_to_one"):
        apply_sum_rule(a, m, "yes")


def test_sum_to_one_predictor_on_images_and_video(weights):
    """Overlapping people: with sum_to_one no pixel's mattes add up to more than 1, for images and videos;
    where they did not, the mattes are the plain network's."""
    img = rgb_image(4)
    masks = np.repeat(people(1), 3, axis=0)  # three people given one mask: each gets its matte
    masks[2, :, 40:] = 1                     # and one of them more
    plain = Predictor(weights["maggie_image"], short_size=64).image(img, masks)
    limited = Predictor(weights["maggie_image"], short_size=64, sum_to_one=True).image(img, masks)
    assert plain.sum(0).max() > 1.05 and limited.sum(0).max() <= 1 + 1e-5
    keep = plain.sum(0) <= 1
    np.testing.assert_array_equal(limited[:, keep], plain[:, keep])
    clip = [(rgb_image(30 + i), masks) for i in range(4)]
    pv = Predictor(weights["maggie_video"], short_size=64, sum_to_one=True)
    assert all(o.sum(0).max() <= 1 + 1e-5 for o in pv.video(iter(clip)))
    # guided: each frame's own masks decide who gives way (frames whose masks differ, streamed in order)
    moving = [(rgb_image(30 + i), np.roll(masks, 4 * i, axis=2)) for i in range(5)]
    plain_video = list(Predictor(weights["maggie_video"], short_size=64).video(iter(moving)))
    guided = list(Predictor(weights["maggie_video"], short_size=64, sum_to_one="guided").video(iter(moving)))
    from maggie.inference.pipeline import limit_sum
    for (_, m), p, g in zip(moving, plain_video, guided, strict=True):
        np.testing.assert_allclose(g, limit_sum(p, m), atol=1e-6)



def test_meeting_band_marks_where_two_peoples_masks_meet():
    from maggie.inference.pipeline import meeting_band
    masks = people(3)                      # columns 6..25, 34..53, 62..81: gaps of 8 px
    assert meeting_band(masks, 4).sum() == 0
    band = meeting_band(masks, 5)          # grown by 5 px they overlap in the gaps' middle columns 29 and 30
    assert band[10:58, 29:31].all() and band[:, :29].sum() == 0 and band[:, 31:57].sum() == 0
    assert meeting_band(people(1), 20).sum() == 0


def test_video_runs_again_finer_where_people_meet(weights):
    """meeting_short_size: where two people's masks meet each frame's matte is the mean of the two runs,
    elsewhere the plain run's, and the frames still stream in order with their own masks."""
    from maggie.inference.pipeline import meeting_band
    moving = [(rgb_image(40 + i), np.roll(people(2), i, axis=2)) for i in range(5)]
    moving[2][1][1, :, 20:30] = 1          # in frame 2 the second person reaches the first
    plain = list(Predictor(weights["maggie_video"], short_size=64).video(iter(moving)))
    finer = list(Predictor(weights["maggie_video"], short_size=96).video(iter(moving)))
    both = list(Predictor(weights["maggie_video"], short_size=64, meeting_short_size=96,
                          meeting_radius=2).video(iter(moving)))
    assert len(both) == len(moving)
    for (_, m), p, f, b in zip(moving, plain, finer, both, strict=True):
        band = meeting_band(m, 2) > 0
        np.testing.assert_allclose(b[:, ~band], p[:, ~band], atol=1e-6)
        np.testing.assert_allclose(b[:, band], (p[:, band] + f[:, band]) / 2, atol=1e-5)
    assert (meeting_band(moving[2][1], 2) > 0).any() and not (meeting_band(moving[0][1], 2) > 0).any()


def test_sum_to_one_flag_of_predict(tmp_path, weights):
    """``--sum-to-one`` alone scales alike, ``--sum-to-one guided`` lets the unguided give way: the written
    mattes of three people sharing one mask add up to at most 1 either way (PNG rounding aside)."""
    write_png(tmp_path / "photo.png", rgb_image(4))
    write_instance_masks(tmp_path / "masks", np.repeat(people(1), 3, axis=0))
    sums = []
    for extra in ([], ["--sum-to-one"], ["--sum-to-one", "guided"]):
        out = tmp_path / f"out{len(extra)}"
        assert predict(str(tmp_path / "photo.png"), "--masks", str(tmp_path / "masks"), "--out", str(out),
                       "--weights", str(weights["maggie_image"]), "--outputs", "alpha", *extra) == 0
        sums.append(sum(read_alpha(out / "alpha" / "photo" / f"{i:02d}.png").astype(float) for i in range(3)))
    assert sums[0].max() > 1.05 * 255 and sums[1].max() <= 255 + 3 and sums[2].max() <= 255 + 3



def test_meeting_short_size_flag_of_predict(tmp_path, weights):
    """``--meeting-short-size``: a video's written mattes change only where two people's masks meet."""
    from maggie.inference.pipeline import meeting_band
    write_video(tmp_path / "clip.mp4", [rgb_image(50 + i) for i in range(4)])
    m = people(2)
    m[1, :, 28:34] = 1                    # the second person reaches to 2 px of the first
    for i in range(4):
        write_instance_masks(tmp_path / "vmasks" / f"{i:05d}", m)
    outs = []
    for extra in ([], ["--meeting-short-size", "96"]):
        out = tmp_path / f"out{len(extra)}"
        assert predict(str(tmp_path / "clip.mp4"), "--masks", str(tmp_path / "vmasks"), "--out", str(out),
                       "--weights", str(weights["maggie_video"]), "--outputs", "alpha", *extra) == 0
        outs.append(np.stack([read_alpha(out / "alpha" / "00002" / f"{i:02d}.png") for i in range(2)]))
    band = meeting_band(m, 4) > 0
    assert band.any()
    np.testing.assert_array_equal(outs[0][:, ~band], outs[1][:, ~band])
    assert (outs[0][:, band] != outs[1][:, band]).any()

def test_default_weights_are_the_newest_trained(tmp_path, weights, monkeypatch, capsys):
    write_png(tmp_path / "photo.png", rgb_image(0))
    write_instance_masks(tmp_path / "masks", people(1))
    args = [str(tmp_path / "photo.png"), "--masks", str(tmp_path / "masks"), "--models-dir", str(tmp_path / "models")]
    assert predict(*args, "--out", str(tmp_path / "o1")) == 2
    assert "dvc repro" in capsys.readouterr().err
    (tmp_path / "models" / "image").mkdir(parents=True)
    (tmp_path / "models" / "image" / "best.safetensors").write_bytes(weights["maggie_image"].read_bytes())
    assert predict(*args, "--out", str(tmp_path / "o2")) == 0


def bad_input_cases(tmp_path: Path, weights) -> dict[str, tuple[list[str], str]]:
    write_png(tmp_path / "ok.png", rgb_image(0))
    write_instance_masks(tmp_path / "masks" / "ok", people(2))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    write_instance_masks(tmp_path / "masks" / "broken", people(2))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    clip, vmasks = make_video(tmp_path, t=4, late=False)
    short = tmp_path / "short_masks"
    for i in range(3):
        write_instance_masks(short / f"{i:05d}", people(2))
    grey = tmp_path / "grey"
    write_png(grey / "ok" / "00.png", (people(1)[0] * 128).astype(np.uint8))
    occupied = tmp_path / "occupied"
    (occupied / "keep.txt").parent.mkdir()
    (occupied / "keep.txt").write_text("precious")
    w = ["--weights", str(weights["maggie_image"])]
    return {
        "missing input": ([str(tmp_path / "nope.png"), "--masks", str(tmp_path / "masks")] + w, "nope.png"),
        "unreadable image": ([str(tmp_path / "broken.png"), "--masks", str(tmp_path / "masks")] + w, "broken.png"),
        "unreadable video": ([str(tmp_path / "broken.mp4"), "--masks", str(vmasks)] + w, "broken.mp4"),
        "frame count mismatch": ([str(clip), "--masks", str(short)] + w, "short_masks"),
        "non-binary mask": ([str(tmp_path / "ok.png"), "--masks", str(grey)] + w, "00.png"),
        "unknown weights": ([str(tmp_path / "ok.png"), "--masks", str(tmp_path / "masks"), "--weights",
                             str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        "missing masks": ([str(tmp_path / "ok.png"), "--masks", str(tmp_path / "nomasks")] + w, "nomasks"),
    }


def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path, weights, capsys):
    cases = bad_input_cases(tmp_path, weights)
    for what, (args, needle) in cases.items():
        out = tmp_path / f"out_{what.replace(' ', '_')}"
        capsys.readouterr()
        assert predict(*args, "--out", str(out)) == 2, what
        err = capsys.readouterr().err.strip()
        assert err.startswith("maggie: error:") and "\n" not in err and needle in err, (what, err)
        assert not out.exists(), what
        assert not list(tmp_path.glob(f".{out.name}.partial*")), what
    # An existing output folder is kept as it is without --overwrite.
    occupied = tmp_path / "occupied"
    assert predict(str(tmp_path / "ok.png"), "--masks", str(tmp_path / "masks"), "--out", str(occupied),
                   "--weights", str(weights["maggie_image"])) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "precious"
    assert predict(str(tmp_path / "ok.png"), "--masks", str(tmp_path / "masks"), "--out", str(occupied),
                   "--weights", str(weights["maggie_image"]), "--overwrite") == 0
    assert (occupied / "alpha" / "ok" / "01.png").exists() and not (occupied / "keep.txt").exists()
