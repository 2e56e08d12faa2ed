"""Procedural assets, compositing, simulated masks and the four synthesized datasets (tiny sizes)."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import params_with, repo_params

from maggie.data.layout import LayoutError, verify_layout
from maggie.data.mask_sources import (
    RecipeError,
    apply_mask_source,
    mask_iou,
    simulate_tracker,
)
from maggie.data.synth.composite import Layer, composite, composite_placed, place_layer, quantize_mattes
from maggie.data.synth.config import load_data_config, resolve_data_config
from maggie.data.synth.datasets import synthesize
from maggie.data.synth.figure_render import render_figure
from maggie.data.synth.figures import pose_at, sample_figure_spec
from maggie.data.synth.parallel import sample_rng
from maggie.data.synth.procedural import AssetBank, build_asset_bank
from maggie.data.synth.scenes import image_scene, video_scene
from maggie.errors import ParamsError
from maggie.stages.synthesize import main

MASK_SOURCES = repo_params()["data"]["image_test"]["mask_sources"]
LEVELS = repo_params()["data"]["video_levels"]

TINY_BANK = {
    "figures": {"train": 4, "test": 3, "held_out": 3},
    "backgrounds": {"train": 2, "test": 2, "held_out": 2},
    "figure_height": 96,
    "bg_size": [96, 128],
}


def tiny_data(root: Path, seed: int = 7, workers: int = 1) -> dict:
    return resolve_data_config(params_with({"data": {
        "root": str(root),
        "seed": seed,
        "workers": workers,
        "bank": TINY_BANK,
        "image_train": {"count": 3, "size": [64, 64]},
        "image_test": {"count_per_subset": 2, "size": [64, 64]},
        "video_train": {"count": 2, "frames": 3, "size": [64, 64]},
        "video_test": {"count_per_split": 1, "frames": 3, "size": [64, 64]},
    }})["data"])


@pytest.fixture(scope="session")
def bank_dir(tmp_path_factory) -> Path:
    return build_asset_bank(tmp_path_factory.mktemp("bank") / "raw", TINY_BANK, seed=7, workers=1)


@pytest.fixture(scope="session")
def built(tmp_path_factory, bank_dir) -> Path:
    """A data root with the bank and all four datasets, built with one worker."""
    root = tmp_path_factory.mktemp("data")
    shutil.copytree(bank_dir, root / "raw")
    data = tiny_data(root)
    for kind in ("image_train", "image_test", "video_train", "video_test"):
        synthesize(kind, data)
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- compositing -------------------------------------------------------------------------------------------


def test_occlusion_rule_by_hand():
    # one pixel, back layer a=0.5 colour 1, front layer a=0.5 colour 0, background 0.2
    back = Layer(np.ones((1, 1, 3), np.float32), np.full((1, 1), 0.5, np.float32), (0, 0))
    front = Layer(np.zeros((1, 1, 3), np.float32), np.full((1, 1), 0.5, np.float32), (0, 0))
    result = composite(np.full((1, 1, 3), 0.2, np.float32), [front, back], depth_order=[1, 0])
    assert result.alphas[:, 0, 0] == pytest.approx([0.5, 0.25])  # input order: front, back
    assert result.image[0, 0, 0] == pytest.approx(0.5 * 0 + 0.25 * 1 + 0.25 * 0.2)


def test_occlusion_rule_random_layers():
    rng = np.random.default_rng(0)
    alphas = [rng.random((16, 20)).astype(np.float32) for _ in range(4)]
    colours = [rng.random((16, 20, 3)).astype(np.float32) for _ in range(4)]
    background = rng.random((16, 20, 3)).astype(np.float32)
    order = [2, 0, 3, 1]  # back to front
    result = composite_placed(
        background, [c * a[..., None] for c, a in zip(colours, alphas, strict=True)], alphas, order
    )
    assert result.alphas.sum(0).max() <= 1.0 + 1e-6
    for rank, index in enumerate(order):
        expected = alphas[index].copy()
        for in_front in order[rank + 1 :]:
            expected *= 1.0 - alphas[in_front]
        np.testing.assert_allclose(result.alphas[index], expected, atol=1e-6)
    image = background.copy()
    for index in order:  # plain 'over', back to front
        image = colours[index] * alphas[index][..., None] + image * (1.0 - alphas[index][..., None])
    np.testing.assert_allclose(result.image, image, atol=1e-5)
    with pytest.raises(ValueError, match="permutation"):
        composite_placed(background, [colours[0]], [alphas[0]], [1])


def test_place_layer_scale_flip_and_clipping():
    alpha = np.zeros((10, 10), np.float32)
    alpha[:, :5] = 1.0  # left half opaque
    rgb = np.ones((10, 10, 3), np.float32)
    _, placed = place_layer(Layer(rgb, alpha, (20.0, 0.0), 2.0, (0.0, 0.0)), (20, 40))
    assert placed[:18, 20:29].min() > 0.99 and placed[:, 31:].max() < 0.01  # 2x wide, starts at x=20
    _, flipped = place_layer(Layer(rgb, alpha, (20.0, 0.0), 1.0, (0.0, 0.0), flip=True), (20, 40))
    assert flipped[:10, 16:20].min() > 0.99 and flipped[:, 21:].max() < 0.01  # mirrored to the left
    _, outside = place_layer(Layer(rgb, alpha, (-8.0, 0.0), 1.0, (0.0, 0.0)), (20, 40))
    assert outside.sum() == pytest.approx(0.0, abs=1e-6)  # entirely left of the frame


def test_quantized_mattes_never_exceed_255():
    rng = np.random.default_rng(1)
    raw = rng.random((3, 50, 50)).astype(np.float32)
    mattes = raw / raw.sum(0, keepdims=True)  # sums exactly 1: independent rounding would overflow
    q = quantize_mattes(mattes)
    assert q.astype(int).sum(0).max() <= 255
    assert np.abs(q.astype(int) - np.rint(mattes * 255)).max() <= 1
    assert (quantize_mattes(np.zeros((2, 4, 4))) == 0).all()


# --- procedural assets -------------------------------------------------------------------------------------


def test_figures_have_genuinely_fractional_alpha():
    disc = np.zeros((256, 256), np.uint8)
    cv2.ellipse(disc, (128, 128), (60, 110), 0, 0, 360, 255, -1, cv2.LINE_AA)
    disc_fraction = ((disc > 12) & (disc < 242)).sum() / (disc > 0).sum()
    for i in range(4):
        alpha = render_figure(sample_figure_spec(np.random.default_rng(i)), 256).alpha
        fraction = ((alpha > 0.05) & (alpha < 0.95)).sum() / (alpha > 0).sum()
        assert fraction > 0.15 and fraction > 5 * disc_fraction
        assert alpha.min() >= 0.0 and alpha.max() <= 1.0 and alpha.max() > 0.99


def test_animation_is_smooth_and_starts_at_rest():
    spec = sample_figure_spec(np.random.default_rng(3))
    assert pose_at(spec, 0.0) == spec["pose"]
    a, b = pose_at(spec, 0.5), pose_at(spec, 0.51)
    assert max(abs(a[k] - b[k]) for k in a) < 2.0
    assert max(abs(a[k] - spec["pose"][k]) for k in a) > 1.0  # the limbs do move


def test_bank_layout_and_rerender_from_meta(bank_dir):
    bank = AssetBank(bank_dir)
    assert len(bank.figures("train")) == 4 and len(bank.backgrounds("held_out")) == 2
    ident = bank.figures("test")[0]
    rgb, alpha, meta = bank.figure(ident)
    assert rgb.shape[:2] == alpha.shape and tuple(meta["size"]) == alpha.shape
    rendered = render_figure(meta["spec"], meta["height_px"]).alpha
    ys, xs = np.nonzero(np.rint(rendered * 255) > 0)
    crop = rendered[max(0, ys.min() - 1) : ys.max() + 2, max(0, xs.min() - 1) : xs.max() + 2]
    assert np.abs(np.rint(crop * 255) - alpha).max() <= 1  # meta.json reproduces the stored figure
    assert (bank_dir / "bg" / f"{bank.backgrounds('train')[0]}.jpg").is_file()


def test_bank_is_deterministic_across_workers(tmp_path, bank_dir):
    other = build_asset_bank(tmp_path / "raw", TINY_BANK, seed=7, workers=2)
    assert tree_digest(other) == tree_digest(bank_dir)


# --- mask sources ------------------------------------------------------------------------------------------


def test_mask_recipe_operations_by_hand():
    alphas = np.zeros((2, 40, 40), np.float32)
    alphas[0, 5:20, 5:20] = 1.0
    alphas[1, 5:20, 20:35] = 1.0  # touching neighbour
    rng = np.random.default_rng(0)
    missed = apply_mask_source(alphas, {"miss_prob": 1.0}, rng)
    assert missed.dtype == np.uint8 and missed.sum() == 0
    merged = apply_mask_source(alphas, {"merge_prob": 1.0}, rng)
    assert (merged[0] == merged[1]).all() and merged[0].sum() == 2 * 15 * 15
    spilled = apply_mask_source(alphas, {"spill": [0.2, 0.2], "spill_prob": 1.0}, rng)
    assert (
        spilled[0, 5:20, 20:23].all() and not spilled[0, 5:20, 26:].any()
    )  # 3 px (0.2 * 15) into the neighbour
    thin = np.zeros((1, 40, 40), np.float32)
    thin[0, 5:35, 5:25] = 1.0
    thin[0, 20, 25:38] = 1.0  # a 1-px strand
    opened = apply_mask_source(thin, {"open_thin": 0.05}, rng)
    assert not opened[0, 20, 27:].any() and opened[0, 10:30, 10:20].all()
    with pytest.raises(RecipeError, match="unknown keys"):
        apply_mask_source(alphas, {"colour": 1}, rng)


@pytest.fixture(scope="module")
def scenes(bank_dir):
    bank = AssetBank(bank_dir)
    cfg = {"size": [96, 128], "fg_pool": "test", "bg_pool": "test"}
    return [image_scene(bank, cfg, sample_rng(11, "scenes", i)).alphas[0] for i in range(12)]


def test_mask_sources_degrade_in_order(scenes):
    assert len(MASK_SOURCES) == 10
    means = []
    for source_index, (name, recipe) in enumerate(MASK_SOURCES.items()):
        ious = []
        for rep in range(2):
            for i, alphas in enumerate(scenes):
                masks = apply_mask_source(alphas, recipe, sample_rng(rep, name, i, source_index))
                assert masks.shape == alphas.shape and set(np.unique(masks)) <= {0, 1}
                ious += [mask_iou(m, a >= 0.5) for m, a in zip(masks, alphas, strict=True)]
        means.append(float(np.mean(ious)))
        assert means[-1] < 0.99, f"{name} does not degrade the masks (mean IoU {means[-1]:.3f})"
    for k in range(len(means) - 1):
        assert means[k + 1] <= means[k] + 0.01, f"mean IoU not ordered mild to severe: {np.round(means, 3)}"
    assert means[-1] < means[0] - 0.3


def test_tracker_good_first_frame_then_worse(bank_dir):
    bank = AssetBank(bank_dir)
    video = video_scene(
        bank,
        LEVELS["comp_medium"],
        sample_rng(3, "trk", 0),
        size=[96, 128],
        frames=8,
        fps=8,
        fg_pool="test",
        bg_pool="test",
    )
    truth = video.alphas >= 0.5

    def mean_curve(cfg: dict) -> np.ndarray:
        curves = []
        for rep in range(6):
            masks = simulate_tracker(video.alphas, cfg, sample_rng(rep, "trk", 1))
            assert masks.shape == truth.shape and masks.dtype == np.uint8
            curves.append(
                [
                    np.mean([mask_iou(m, t) for m, t in zip(masks[f], truth[f], strict=True)])
                    for f in range(len(truth))
                ]
            )
        return np.mean(curves, 0)

    default = mean_curve({})
    assert default[0] == 1.0 and default[1:].mean() < 0.97
    drift_only = mean_curve({"loss_prob": 0.0})  # error accumulates: the later frames are worse
    assert drift_only[0] == 1.0 and drift_only[5:].mean() < drift_only[1:3].mean() - 0.03
    lost = simulate_tracker(
        video.alphas[:, :1], {"loss_prob": 1.0, "loss_frames": [1, 1]}, np.random.default_rng(0)
    )
    assert lost[1].sum() == 0 and (lost[2] == truth[2, :1]).all()  # lost, then recovered from the true mask


def test_video_levels_reach_their_occlusion(bank_dir):
    bank = AssetBank(bank_dir)
    for level, (lo, hi) in (("comp_easy", (0.0, 0.01)), ("comp_hard", (0.5, 0.85))):
        video = video_scene(
            bank,
            LEVELS[level],
            sample_rng(9, level, 0),
            size=[96, 128],
            frames=4,
            fps=8,
            fg_pool="test",
            bg_pool="test",
        )
        assert video.info["in_range"] and lo <= video.info["max_occlusion"] <= hi
        assert video.alphas.sum(1).max() <= 1.0 + 1e-5


# --- datasets ----------------------------------------------------------------------------------------------


def test_layouts_match_the_reference_loaders(built):
    # HIM training loader: <root>/<split>/images/*.jpg, <root>/<split>/alphas/<name>/*.png
    train = built / "I-HIM50K"
    assert sorted(os.listdir(train)) == ["alphas", "contact_sheet.png", "images", "manifest.json"]
    images = sorted(glob.glob(str(train / "images" / "*.jpg")))
    assert len(images) == 3
    for image in images:
        name = Path(image).stem
        pngs = sorted(os.listdir(train / "alphas" / name))
        assert pngs == [f"{k:02d}.png" for k in range(len(pngs))] and len(pngs) >= 2
        shape = cv2.imread(image).shape[:2]
        total = sum(
            cv2.imread(str(train / "alphas" / name / p), cv2.IMREAD_GRAYSCALE).astype(int) for p in pngs
        )
        assert total.shape == shape and total.max() <= 255
    # HIM test loader: <root>/images/<subset>/*.jpg, masks by replacing 'alphas' with the mask folder name
    test = built / "HIM2K_M-HIM2K"
    sources = sorted(f"masks_matched_{s}" for s in MASK_SOURCES)
    assert sorted(os.listdir(test)) == sorted(
        ["alphas", "contact_sheet.png", "images", "manifest.json", *sources]
    )
    for subset in ("in_dist", "held_out"):
        for image in sorted(glob.glob(str(test / "images" / subset / "*.jpg"))):
            alphas = sorted(glob.glob(str(test / "alphas" / subset / Path(image).stem / "*.png")))
            assert alphas
            for source in sources:
                for alpha in alphas:
                    mask = cv2.imread(alpha.replace("alphas", source), cv2.IMREAD_GRAYSCALE)
                    assert mask is not None and mask.shape == cv2.imread(image).shape[:2]
                    assert set(np.unique(mask)) <= {0, 255}
    # VIM loader: <root>/<split>/pha/<video> lists videos, frames from fgr, masks by '/pha/' -> '/xmem/'
    for root, split, with_masks in (
        (built, "V-HIM2K5", False),
        (built / "V-HIM60", "comp_easy", True),
        (built / "V-HIM60", "comp_medium", True),
        (built / "V-HIM60", "comp_hard", True),
    ):
        split_dir = root / split
        expected = ["fgr", "pha", "xmem"] if with_masks else ["fgr", "pha"]
        assert sorted(d for d in os.listdir(split_dir) if (split_dir / d).is_dir()) == expected
        for video in sorted(os.listdir(split_dir / "pha")):
            frames = sorted(os.listdir(split_dir / "fgr" / video))
            assert frames == [f"{t:05d}.jpg" for t in range(3)]
            counts = set()
            for frame in frames:
                alphas = sorted(glob.glob(os.path.join(str(split_dir), "pha", video, frame[:-4], "*.png")))
                counts.add(len(alphas))
                if with_masks:
                    assert all(os.path.isfile(a.replace("/pha/", "/xmem/")) for a in alphas)
            assert len(counts) == 1 and counts.pop() >= 2  # same instances in every frame
    assert sorted(os.listdir(built / "V-HIM60")) == [
        "comp_easy",
        "comp_hard",
        "comp_medium",
        "contact_sheet.png",
        "manifest.json",
    ]
    assert not [p for p in os.listdir(built) if ".tmp-" in p or ".old-" in p]
    for kind, name in (
        ("image_train", "I-HIM50K"),
        ("image_test", "HIM2K_M-HIM2K"),
        ("video_train", "V-HIM2K5"),
        ("video_test", "V-HIM60"),
    ):
        verify_layout(kind, built / name)


def test_contact_sheets_are_valid_pngs(built):
    for name in ("I-HIM50K", "HIM2K_M-HIM2K", "V-HIM2K5", "V-HIM60"):
        path = built / name / "contact_sheet.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        sheet = cv2.imread(str(path))
        assert sheet is not None and sheet.shape[0] > 50 and sheet.shape[1] > 100


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, built):
    root = tmp_path / "again"
    shutil.copytree(built / "raw", root / "raw")
    data = tiny_data(root, workers=2)
    for kind, name in (("image_test", "HIM2K_M-HIM2K"), ("video_test", "V-HIM60")):
        synthesize(kind, data)
        assert tree_digest(root / name) == tree_digest(built / name)
    synthesize("image_train", tiny_data(root, seed=8))
    assert tree_digest(root / "I-HIM50K") != tree_digest(built / "I-HIM50K")


def test_output_replaced_atomically(tmp_path, built, monkeypatch):
    root = tmp_path / "atomic"
    shutil.copytree(built / "raw", root / "raw")
    (root / "I-HIM50K").mkdir()
    (root / "I-HIM50K" / "stale.txt").write_text("old")
    import maggie.data.synth.datasets as synth

    def broken(*_args):
        raise RuntimeError("interrupted")

    monkeypatch.setitem(synth.BUILDERS, "image_train", broken)
    with pytest.raises(RuntimeError):
        synthesize("image_train", tiny_data(root))
    assert (root / "I-HIM50K" / "stale.txt").is_file()  # the old output survives a failed build
    monkeypatch.undo()
    synthesize("image_train", tiny_data(root))
    assert not (root / "I-HIM50K" / "stale.txt").exists() and (root / "I-HIM50K" / "manifest.json").is_file()
    assert sorted(os.listdir(root)) == ["I-HIM50K", "raw"]


def test_pulled_source_is_checked_and_placed(tmp_path, built):
    root = tmp_path / "pulled"
    pulled = root / "raw" / "V-HIM60"  # where the pull stage leaves it
    shutil.copytree(built / "V-HIM60", pulled)
    (pulled / "contact_sheet.png").unlink()
    before = tree_digest(pulled)
    data = {**tiny_data(root), "source": "local"}
    synthesize("video_test", data)
    assert tree_digest(pulled) == before, "the pull stage's output is left as it was"
    placed = tree_digest(root / "V-HIM60")
    assert set(placed) - set(before) == {"contact_sheet.png"} and all(placed[k] == v for k, v in before.items())
    shutil.rmtree(next((pulled / "comp_hard" / "xmem").iterdir()))
    with pytest.raises(LayoutError, match="xmem"):
        synthesize("video_test", data)
    with pytest.raises(FileNotFoundError, match="not pulled"):
        synthesize("image_train", data)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with({"data": {"root": str(tmp_path / "nothing")}})))
    assert main(["image_train", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("synthesize: error:") and "asset bank not found" in err and "\n" not in err
    params.write_text(yaml.safe_dump(params_with({"data": {"image_train": {"cout": 3}}})))
    with pytest.raises(ParamsError, match="cout"):
        load_data_config(params)
    assert main(["video_test", "--params", str(tmp_path / "missing.yaml")]) == 2


def test_photographs_used_when_scikit_image_is_importable(tmp_path, monkeypatch):
    fake = tmp_path / "site" / "skimage"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    photo = np.zeros((60, 80, 3), np.uint8)
    photo[:, :40] = (0, 0, 255)  # red left half (BGR on disk)
    cv2.imwrite(str(fake / "data" / "coffee.png"), photo)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in list(__import__("sys").modules) if m == "skimage" or m.startswith("skimage.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    from maggie.data.synth.backgrounds import available_photos, render_background

    photos = available_photos()
    assert [p.name for p in photos] == ["coffee.png"]
    image = render_background("photo", np.random.default_rng(0), (30, 40), photos[0])
    assert image.shape == (30, 40, 3) and image[..., 0].max() == 255 and image[..., 2].max() == 0
    bank = build_asset_bank(
        tmp_path / "raw", {**TINY_BANK, "figures": {"train": 1, "test": 1, "held_out": 1}}, seed=1, workers=1
    )
    kinds = AssetBank(bank).manifest["bg_kinds"]
    assert "photo" in {kinds[i] for i in AssetBank(bank).backgrounds("held_out")}
