"""The real-source path end to end: fake HHM / BG-20K / VideoMatte240K-style trees made here,
lists fetched by the pull stage (from a folder and over HTTP), datasets composed by the synthesis stage."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import params_with

from maggie.data.fetch.source_lists import fetch_lists
from maggie.data.layout import DataError, verify_layout
from maggie.data.synth.config import load_data_config
from maggie.data.synth.procedural import open_bank
from maggie.data.synth.real_sources import RealAssetBank
from maggie.files import read_gray, read_rgb, write_image
from maggie.stages.pull import main as pull_main
from maggie.stages.pull import pull
from maggie.stages.synthesize import synthesize

RED = (230, 20, 20)  # every fake foreground is this colour, so composed people can be traced to their source


def person(h: int, w: int, shift: int = 0) -> np.ndarray:
    """A soft standing-person alpha: head disc plus body ellipse, blurred edges."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w / 2 + shift
    head = ((xx - cx) / (0.12 * w)) ** 2 + ((yy - 0.15 * h) / (0.1 * h)) ** 2
    body = ((xx - cx) / (0.25 * w)) ** 2 + ((yy - 0.6 * h) / (0.38 * h)) ** 2
    a = np.clip(1.5 - np.minimum(head, body) * 1.5, 0, 1)
    return (a * 255).astype(np.uint8)


def make_sources(root: Path) -> dict:
    rng = np.random.default_rng(0)
    hhm = root / "HHM"
    for i in range(6):
        alpha = np.zeros((120, 90), np.uint8)
        alpha[10:110, 5:85] = person(100, 80)
        write_image(hhm / "images" / f"p{i}.jpg", np.full((120, 90, 3), RED, np.uint8), 98)
        write_image(hhm / "alphas" / f"p{i}.png", alpha)
    write_image(hhm / "images" / "noalpha.jpg", np.zeros((8, 8, 3), np.uint8))
    for i in range(3):
        write_image(root / "BG-20K" / "train" / f"bg{i}.jpg", rng.integers(0, 120, (150, 200, 3), dtype=np.uint8))
    vhm = root / "VHM"
    clips = {"train": ["VideoMatte240K/train/fgr/0000", "VideoMatte240K/train/fgr/0001", "VM108/fgr/a"],
             "rgba": ["VM108/rgba/d"],
             "test": ["VideoMatte240K/test/fgr/0000", "CRGNN/fgr/b", "CRGNN/fgr/c"]}
    for split, entries in clips.items():
        for entry in entries if split != "rgba" else []:
            for f in range(5):
                write_image(vhm / entry / f"{f:05d}.jpg", np.full((100, 80, 3), RED, np.uint8), 98)
                write_image(vhm / entry.replace("fgr", "pha") / f"{f:05d}.png", person(100, 80, shift=f))
    rgba_dir = vhm / "VM108" / "rgba" / "d"  # RGBA frames outside an fgr/pha tree, as the authors read VM108 / CRGNN
    rgba_dir.mkdir(parents=True)
    for f in range(5):
        rgba = np.concatenate([np.full((100, 80, 3), RED, np.uint8), person(100, 80, shift=-f)[..., None]], axis=2)
        cv2.imwrite(str(rgba_dir / f"{f:05d}.png"), rgba)
    for f in range(6):
        write_image(vhm / "Backgrounds" / "clip0" / f"{f:05d}.jpg", np.full((150, 200, 3), 10 * f, np.uint8))
    write_image(vhm / "Backgrounds" / "still.jpg", rng.integers(0, 120, (150, 200, 3), dtype=np.uint8))
    lists = root / "lists"
    lists.mkdir()
    (lists / "invalid_him.txt").write_text("p5.jpg\n")
    for split in ("train", "test"):
        (lists / f"fg_{split}.txt").write_text("\n".join(clips[split] + (clips["rgba"] if split == "train" else []))
                                              + "\n")
        (lists / f"bg_{split}.txt").write_text("Backgrounds/clip0\nBackgrounds/still.jpg\n")
    return {"hhm": hhm, "bg": root / "BG-20K" / "train", "vhm": vhm, "lists": lists}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return make_sources(tmp_path_factory.mktemp("sources"))


def real_params(src: dict, data_root: Path, lists: dict | None = None) -> dict:
    size = [96, 128]
    data = {
        "source": "real", "root": str(data_root), "seed": 3, "workers": 1,
        "real": {
            "lists": lists or {"from": "local", "location": str(src["lists"])},
            "image_pools": {"hhm": {"fg": str(src["hhm"]), "bg": str(src["bg"]), "invalid_names": "invalid_him.txt"}},
            "video_root": str(src["vhm"]),
            "video_pools": {"vhm_train": {"fg_list": "fg_train.txt", "bg_list": "bg_train.txt"},
                            "vhm_test": {"fg_list": "fg_test.txt", "bg_list": "bg_test.txt"}},
        },
        "image_train": {"count": 4, "size": size, "min_inst": 2, "max_inst": 5, "fg_pool": "hhm", "bg_pool": "hhm",
                        "inside": True},
        "image_test": {"count_per_subset": 2, "size": size,
                       "subsets": {"comp": {"fg_pool": "hhm", "bg_pool": "hhm", "min_inst": 2, "max_inst": 3}},
                       "mask_sources": {"coarse": {"coarse": 14}}},
        "video_train": {"count": 2, "frames": 4, "size": size, "fg_pool": "vhm_train", "bg_pool": "vhm_train"},
        "video_test": {"count_per_split": 1, "frames": 4, "size": size, "fg_pool": "vhm_test", "bg_pool": "vhm_test"},
    }
    merged = params_with({"data": data})
    for key in ("subsets", "mask_sources"):  # replaced, not merged with the default's
        merged["data"]["image_test"][key] = data["image_test"][key]
    return merged


def test_real_sources_compose_all_four_datasets(sources, tmp_path):
    params = real_params(sources, tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    raw = pull(params)
    assert sorted(p.name for p in (raw / "lists").iterdir()) == sorted(
        ["invalid_him.txt", "fg_train.txt", "fg_test.txt", "bg_train.txt", "bg_test.txt"])
    bank = open_bank(raw)
    assert isinstance(bank, RealAssetBank)
    # The invalid name and the image without alpha are skipped.
    assert sorted(bank.figures("hhm")) == [f"hhm/p{i}" for i in range(5)]
    assert len(bank.figures("vhm_train")) == 4 and len(bank.backgrounds("vhm_test")) == 2
    # The RGBA clip's alpha comes from its fourth channel.
    _rgb, alpha, _anchor, _scale = bank.figure_frame("vhm_train/VM108/rgba/d", 50.0, 0, 8.0, (0, 5))
    assert alpha.max() == 255 and alpha.shape[0] > 90

    data = load_data_config(tmp_path / "params.yaml")
    for kind in ("image_train", "image_test", "video_train", "video_test"):
        out = synthesize(kind, data)
        verify_layout(kind, out)
    train = tmp_path / "data" / "I-HIM50K"
    images = sorted((train / "images").glob("*.jpg"))
    assert len(images) == 4
    for img in images:
        alphas = sorted((train / "alphas" / img.stem).glob("*.png"))
        assert 2 <= len(alphas) <= 5
        rgb = read_rgb(img).astype(int)
        union = np.max([read_gray(a) for a in alphas], axis=0)
        # inside: true (the authors' rule) keeps every person wholly inside the image: at most the
        # soft rim of a bounding box touches the border, never the opaque body.
        assert max(union[0].max(), union[-1].max(), union[:, 0].max(), union[:, -1].max()) < 128
        # Where a person is fully opaque the pixel is the source foreground's colour.
        inside = rgb[union == 255]
        assert len(inside) > 50
        assert np.abs(inside - np.array(RED)).max(axis=1).mean() < 25
    # Videos: every frame written, people from the clips (red where opaque), frames differ (filmed background).
    clip = sorted((tmp_path / "data" / "V-HIM2K5" / "fgr").iterdir())[0]
    frames = sorted(clip.glob("*.jpg"))
    assert len(frames) == 4
    pha = sorted((tmp_path / "data" / "V-HIM2K5" / "pha" / clip.name).iterdir())
    assert len(pha) == 4 and len(list(pha[0].glob("*.png"))) >= 2
    for split in ("comp_easy", "comp_medium", "comp_hard"):
        assert (tmp_path / "data" / "V-HIM60" / split / "xmem").is_dir()


def test_short_clips_play_back_and_forth(sources, tmp_path):
    raw = pull(real_params(sources, tmp_path / "data"))
    bank = open_bank(raw)
    ident = bank.figures("vhm_train")[0]
    assert bank.clip_length(ident) == 5
    # Frames 0..4 then 3, 2, 1, 0, 1: the alpha moves right by one pixel per source frame.
    centres = []
    for f in range(9):
        _rgb, alpha, anchor, scale = bank.figure_frame(ident, 50.0, f, 8.0, (0, 5))
        centres.append(float((alpha.astype(float) * np.arange(alpha.shape[1])).sum() / alpha.sum()))
        assert scale == pytest.approx(50.0 / alpha.shape[0]) and anchor[1] == alpha.shape[0]
    assert np.argmax(centres) == 4 and centres[8] == pytest.approx(centres[0], abs=1e-6)


def test_lists_are_fetched_over_http(sources, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(sources["lists"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        got = fetch_lists({"from": "url", "location": base}, tmp_path / "lists")
        assert [p.read_text() for p in got] == [(sources["lists"] / p.name).read_text() for p in got]
        with pytest.raises(DataError, match="HTTP 404"):
            fetch_lists({"from": "url", "location": base, "files": ["absent.txt"]}, tmp_path / "lists")
        assert not list((tmp_path / "lists").glob(".*"))  # no partial files left behind
    finally:
        server.shutdown()


def test_bad_sources_give_one_line_errors(sources, tmp_path, capsys):
    params = real_params(sources, tmp_path / "data")
    params["data"]["real"]["image_pools"]["hhm"]["fg"] = str(tmp_path / "nowhere")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert pull_main(["--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_pools.hhm.fg" in err[0] and "nowhere" in err[0]

    params = real_params(sources, tmp_path / "data")
    bad_lists = tmp_path / "bad_lists"
    bad_lists.mkdir()
    for p in sources["lists"].iterdir():
        (bad_lists / p.name).write_text(p.read_text())
    (bad_lists / "fg_test.txt").write_text("CRGNN/fgr/b\nCRGNN/fgr/missing\n")
    params["data"]["real"]["lists"]["location"] = str(bad_lists)
    with pytest.raises(DataError, match=r"fg_test.txt: 1 listed clips have no fgr/pha frames .*CRGNN/fgr/missing"):
        pull(params)
    assert not (tmp_path / "data" / "raw").exists()  # nothing half-written

    params = real_params(sources, tmp_path / "data")
    pull(params)
    params["data"]["video_train"]["fg_pool"] = "train"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(DataError, match=r"no foreground pool 'train'"):
        synthesize("video_train", load_data_config(tmp_path / "params.yaml"))


def test_real_preset_resolves_to_the_real_pools():
    from maggie.config.params import load_params
    from maggie.config.presets import deep_merge
    from maggie.data.synth.config import resolve_data_config

    repo = Path(__file__).resolve().parents[1]
    merged = deep_merge(load_params(repo / "params.yaml"), yaml.safe_load((repo / "presets" / "real.yaml").read_text()))
    data = resolve_data_config(merged["data"])
    pools = set(data["real"]["image_pools"]) | set(data["real"]["video_pools"])
    used = {data["image_train"]["fg_pool"], data["video_train"]["fg_pool"], data["video_test"]["fg_pool"],
            *(s["fg_pool"] for s in data["image_test"]["subsets"].values())}
    assert data["source"] == "real" and used <= pools
