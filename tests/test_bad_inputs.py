"""A new user's mistakes and faults, built here file by file: each ends in one line naming the file and the
problem, exit code 2, nothing written, inputs and existing outputs intact; and the mask formats people
have are read as they mean them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from test_predict import H, W, id_map, people, rgb_image, write_instance_masks, write_png, write_video

from maggie.cli import main
from maggie.inference.masks import InputError, MaskSource, read_id_map, read_person_mask
from maggie.models import MaGGIe, MaggieConfig, save_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    save_weights(MaGGIe(MaggieConfig(arch="maggie_image")).eval(), d / "image.safetensors")
    save_weights(MaGGIe(MaggieConfig(arch="maggie_video")).eval(), d / "video.safetensors")
    return d


@pytest.fixture()
def photo(tmp_path):
    write_png(tmp_path / "in" / "photo.png", rgb_image(1))
    write_instance_masks(tmp_path / "masks", people(2))
    return tmp_path


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, args: list[str], needle: str, project: Path, out: Path | None = None) -> str:
    """Runs ``maggie predict``; checks exit 2, one line with ``needle``, nothing written, inputs intact."""
    before = tree(project)
    rc = main(["predict", *args, "--short-size", "64"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert rc == 2 and len(errors) == 1 and needle in errors[0], err
    assert "Traceback" not in "\n".join(err)
    assert tree(project) == before, "an input or an existing output changed"
    if out is not None:
        assert not out.exists()
    assert not [p for p in project.rglob(".*partial")], "a staging folder was left behind"
    return errors[0]


# ---- mask formats ----------------------------------------------------------------------------------------


def test_mask_formats_are_read_as_meant(tmp_path):
    two = people(2)
    ids = id_map(two)
    pal = Image.fromarray(ids, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "palette.png")
    assert np.array_equal(read_id_map(tmp_path / "palette.png"), ids), "palette index = ID, not its colour"
    many = np.zeros((H, W), np.uint16)
    for k in range(12):
        many[2 + 5 * k:6 + 5 * k, 4:90] = 300 + k
    Image.fromarray(many).save(tmp_path / "ids16.png")
    assert len(MaskSource(tmp_path / "ids16.png").instance_names()) == 12, "16-bit IDs are not scaled to 8 bits"
    red = np.zeros((H, W, 3), np.uint8)
    red[two[0] > 0] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "red.png")
    assert np.array_equal(read_person_mask(tmp_path / "red.png"), two[0]), "a colour mask: any non-black pixel"
    Image.fromarray(two[0].astype(np.uint16)).save(tmp_path / "one16.png")
    assert np.array_equal(read_person_mask(tmp_path / "one16.png"), two[0]), "a 16-bit 0/1 mask"
    Image.fromarray(two[0] * 255).save(tmp_path / "single.png")
    assert MaskSource(tmp_path / "single.png").instance_names() == ["00"], "a 0/255 file is one person, 00"
    Image.fromarray(two[0].astype(bool)).save(tmp_path / "bits.png")
    assert np.array_equal(read_person_mask(tmp_path / "bits.png"), two[0])
    soft = cv2.GaussianBlur(two[0].astype(np.float32) * 255, (9, 9), 3).astype(np.uint8)
    Image.fromarray(soft).save(tmp_path / "soft.png")
    with pytest.raises(InputError, match="not binary"):
        read_person_mask(tmp_path / "soft.png")
    with pytest.raises(InputError, match="not an ID map"):
        read_id_map(tmp_path / "soft.png")
    ramp = (np.arange(H * W).reshape(H, W) % 256).astype(np.uint8)  # 255 small people are still an ID map
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert len(MaskSource(tmp_path / "ramp.png").instance_names()) == 255
    colour = np.zeros((H, W, 3), np.uint8)
    colour[two[0] > 0], colour[two[1] > 0] = (255, 0, 0), (0, 255, 0)
    Image.fromarray(colour).save(tmp_path / "colour_ids.png")
    with pytest.raises(InputError, match="colour ID map is ambiguous"):
        read_id_map(tmp_path / "colour_ids.png")


def test_a_single_grey_mask_file_is_checked(photo, weights, capsys):
    Image.fromarray(people(1)[0] * 255).save(photo / "one.png")
    out = photo / "res"
    assert main(["predict", str(photo / "in" / "photo.png"), "--masks", str(photo / "one.png"), "--out", str(out),
                 "--weights", str(weights / "image.safetensors"), "--short-size", "64"]) == 0
    assert sorted(p.name for p in (out / "alpha" / "photo").iterdir()) == ["00.png"]
    soft = cv2.GaussianBlur(people(1)[0].astype(np.float32) * 255, (9, 9), 3).astype(np.uint8)
    Image.fromarray(soft).save(photo / "soft.png")
    refused(capsys, [str(photo / "in" / "photo.png"), "--masks", str(photo / "soft.png"), "--out",
                     str(photo / "res2"), "--weights", str(weights / "image.safetensors")], "soft.png", photo,
            photo / "res2")


# ---- bad inputs of maggie predict ------------------------------------------------------------------------


def test_overwrite_never_deletes_the_inputs(photo, weights, capsys):
    w = str(weights / "image.safetensors")
    refused(capsys, [str(photo / "in" / "photo.png"), "--masks", str(photo / "masks"), "--out", str(photo / "in"),
                     "--weights", w, "--overwrite"], "holds the input", photo)
    refused(capsys, [str(photo / "in" / "photo.png"), "--masks", str(photo / "masks"), "--out", str(photo),
                     "--weights", w, "--overwrite"], "holds the input", photo)
    refused(capsys, [str(photo / "in"), "--masks", str(photo / "masks"), "--out", str(photo / "masks"),
                     "--weights", w, "--overwrite"], "holds the masks", photo)


@pytest.mark.parametrize("case,needle", [
    ("truncated_weights", "not a readable safetensors file"),
    ("nan_weights", "NaN or infinite"),
    ("missing_weights", "no such weights file"),
    ("cuda", "no CUDA GPU"),
    ("bad_device", "unknown device"),
    ("short_size", "--short-size 0"),
    ("huge_header", "megapixels, more than --max-pixels"),
    ("strip", "aspect ratio of 200:1"),
    ("truncated_jpeg", "not a readable image"),
    ("empty_ids", "no person in any mask"),
    ("aspect_mask", "another aspect ratio"),
])
def test_bad_input_is_one_line_and_nothing_written(photo, weights, capsys, case, needle):
    image, masks, w = photo / "in" / "photo.png", photo / "masks", str(weights / "image.safetensors")
    extra: list[str] = []
    if case == "truncated_weights":
        data = (weights / "image.safetensors").read_bytes()
        (photo / "cut.safetensors").write_bytes(data[: len(data) // 3])
        w = str(photo / "cut.safetensors")
    elif case == "nan_weights":
        model = MaGGIe(MaggieConfig(arch="maggie_image"))
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        save_weights(model, photo / "nan.safetensors")
        w = str(photo / "nan.safetensors")
    elif case == "missing_weights":
        w = str(photo / "models" / "best.safetensors")
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("a GPU is visible")
        extra = ["--device", "cuda"]
    elif case == "bad_device":
        extra = ["--device", "tpu9"]
    elif case == "short_size":
        extra = ["--short-size", "0"]
    elif case == "huge_header":
        image = photo / "in" / "bomb.png"
        image.write_bytes(png_header(100000, 100000))
        masks = photo / "bomb_masks"
        write_instance_masks(masks / "bomb", people(1))
    elif case == "strip":
        image = photo / "in" / "strip.png"
        write_png(image, np.zeros((2, 400, 3), np.uint8))
        masks = photo / "strip_masks"
        write_png(masks / "strip" / "00.png", np.full((2, 400), 255, np.uint8))
    elif case == "truncated_jpeg":
        image = photo / "in" / "cut.jpg"
        ok, buf = cv2.imencode(".jpg", rgb_image(3))
        image.write_bytes(buf.tobytes()[: len(buf) // 2])
        masks = photo / "cut_masks"
        write_instance_masks(masks / "cut", people(2))
    elif case == "empty_ids":
        masks = photo / "empty.png"
        write_png(masks, np.zeros((H, W), np.uint8))
    elif case == "aspect_mask":
        masks = photo / "wide_masks"
        write_png(masks / "photo" / "00.png", np.full((H, 3 * W), 255, np.uint8))
    out = photo / "res"
    args = [str(image), "--masks", str(masks), "--out", str(out), "--weights", w, *extra]
    if case == "short_size":
        before = tree(photo)
        assert main(["predict", *args]) == 2
        assert needle in capsys.readouterr().err and tree(photo) == before
        return
    refused(capsys, args, needle, photo, out)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (a decompression bomb's first bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_existing_outputs_survive_a_failed_run(photo, weights, capsys):
    out = photo / "res"
    (out / "alpha").mkdir(parents=True)
    (out / "alpha" / "keep.png").write_bytes(b"old result")
    refused(capsys, [str(photo / "in" / "photo.png"), "--masks", str(photo / "nowhere"), "--out", str(out),
                     "--weights", str(weights / "image.safetensors"), "--overwrite"], "nowhere", photo)
    assert (out / "alpha" / "keep.png").read_bytes() == b"old result"


def test_interrupt_and_kill_leave_no_staging(photo, weights, capsys, monkeypatch):
    import maggie.inference.outputs as outputs

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt  # what SIGTERM becomes (timeout, docker stop, SLURM)

    monkeypatch.setattr(outputs.OutputWriter, "image", interrupted)
    rc = main(["predict", str(photo / "in" / "photo.png"), "--masks", str(photo / "masks"), "--out",
               str(photo / "res"), "--weights", str(weights / "image.safetensors"), "--short-size", "64"])
    assert rc == 130 and not (photo / "res").exists() and not list(photo.glob(".*partial"))
    monkeypatch.undo()
    # A SIGKILLed run's staging folder (a dead process id) is removed by the next run.
    (photo / ".res.999999-0.partial").mkdir()
    assert main(["predict", str(photo / "in" / "photo.png"), "--masks", str(photo / "masks"), "--out",
                 str(photo / "res"), "--weights", str(weights / "image.safetensors"), "--short-size", "64"]) == 0
    assert not list(photo.glob(".*partial")) and (photo / "res" / "alpha" / "photo" / "00.png").is_file()


@pytest.mark.parametrize("writer", ["opencv", "pyav"])
def test_a_video_that_cannot_be_written_is_not_reported_as_written(tmp_path, weights, capsys, monkeypatch, writer):
    frames = [rgb_image(t) for t in range(4)]
    write_video(tmp_path / "clip.mp4", frames)
    for t in range(4):
        write_png(tmp_path / "masks" / f"{t:05d}.png", id_map(people(2, t)))
    import maggie.inference.outputs as outputs
    import maggie.inference.video_io as video_io

    class FullDisk:  # what OpenCV's writer does on a full disk: accepts every frame, writes nothing
        def __init__(self, path, *args):
            Path(path).write_bytes(b"")

        def isOpened(self):
            return True

        def write(self, frame):
            pass

        def release(self):
            pass

    if writer == "opencv":  # the fallback without PyAV
        monkeypatch.setattr(outputs, "have_pyav", lambda: False)
        monkeypatch.setattr(outputs.cv2, "VideoWriter", FullDisk)
    else:
        pytest.importorskip("av")
        monkeypatch.setattr(video_io, "count_frames", lambda path: 0)  # the file read back holds nothing
    out = tmp_path / "res"
    err = refused(capsys, [str(tmp_path / "clip.mp4"), "--masks", str(tmp_path / "masks"), "--out", str(out),
                           "--weights", str(weights / "video.safetensors"), "--outputs", "alpha,composite"],
                  "composite.mp4: the video holds 0 of the 4 frames written", tmp_path, out)
    assert "disk full" in err


# ---- the pipeline's own files ------------------------------------------------------------------------------


def test_a_damaged_training_state_is_one_line(tmp_path):
    from conftest import repo_params

    from maggie.config.params import stage_settings
    from maggie.engine.build import build_optimizer
    from maggie.engine.checkpoints import load_training_state, save_training_state
    from maggie.errors import WeightsError

    _, tset = stage_settings(repo_params(), "image")
    model = MaGGIe(MaggieConfig())
    opt, sched = build_optimizer(model, tset)
    save_training_state(tmp_path, "last", model, opt, sched, None, 3, {"fingerprint": "f"})
    state = tmp_path / "last_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(WeightsError, match="last_state.pt: damaged training state"):
        load_training_state(tmp_path, "last", model, opt, sched, None, "f")


def test_a_crafted_split_archive_is_one_line(tmp_path):
    from maggie.data.fetch.archives import extract_zip
    from maggie.errors import DataError

    (tmp_path / "I-HIM50K.z01").write_bytes(b"PK\x07\x08" + b"\x00" * 40)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 1, 0, 5, 5, 0xFFFFFF, 0xFFFFFF, 0)
    (tmp_path / "I-HIM50K.zip").write_bytes(b"\x00" * 10 + eocd)
    with pytest.raises(DataError) as err:
        extract_zip(tmp_path / "I-HIM50K.zip", tmp_path / "out" / "I-HIM50K")
    assert "I-HIM50K.zip" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "I-HIM50K").exists()


def test_an_error_from_a_loader_worker_keeps_one_line():
    from maggie.stages import one_line

    text = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\n    raise DataError(msg)\nmaggie.errors.DataError: data/a.jpg: not a '
            "readable image\n")
    assert one_line(ValueError(text)) == "data/a.jpg: not a readable image"
