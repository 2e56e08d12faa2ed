"""Qualitative sets: real images or videos with guidance masks but no true alpha (``test.qualitative``).

    python -m maggie.stages.qualitative --params params.yaml

The folder uses the benchmarks' layouts without the alpha: videos as ``fgr/<video>/<frame>.jpg`` with
masks ``<mask_dir>/<video>/<frame>/NN.png`` (one PNG per person, as a tracker writes them), images as
``images/<name>.jpg`` with ``<mask_dir>/<name>/NN.png``.  With nothing to compare against, it writes
what can be looked at instead of metrics: matte previews, and per video the temporal stability of
every person's matte (mean absolute frame-to-frame change) next to that of its guidance mask.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maggie.config.methods import best_weights
from maggie.config.params import load_params, section
from maggie.data.layout import DataError, read_rgb
from maggie.drawing import colour_mattes, grid, label, overlay
from maggie.files import atomic_dir, remove_stale_partials, write_figure, write_json, write_png
from maggie.inference.inputs import MaskSource, find_mask, frame_mask_sources, union_names

log = logging.getLogger("maggie.qualitative")
EXTS = (".jpg", ".jpeg", ".png")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS) if folder.is_dir() else []


def discover(folder: Path, mask_dir: str) -> dict[str, list[str]]:
    """The videos and images of a qualitative folder; a one-line error when there is neither."""
    if not folder.is_dir():
        raise DataError(f"{folder}: test.qualitative.dir is not a folder")
    videos = sorted(p.name for p in (folder / "fgr").iterdir() if p.is_dir()) if (folder / "fgr").is_dir() else []
    images = [p.stem for p in _files(folder / "images")]
    if not videos and not images:
        raise DataError(f"{folder}: no fgr/<video>/ frames and no images/ found")
    if not (folder / mask_dir).is_dir():
        raise DataError(f"{folder / mask_dir}: no guidance masks (test.qualitative.mask_dir)")
    return {"videos": videos, "images": images}


def frame_change(stack: np.ndarray) -> np.ndarray:
    """``[T, N, H, W]`` -> ``[T-1, N]`` mean absolute change between consecutive frames."""
    return np.abs(np.diff(stack.astype(np.float32), axis=0)).mean(axis=(2, 3))


def stability_plot(path: Path, title: str, matte: np.ndarray, mask: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = np.arange(1, matte.shape[0] + 1)
    for i in range(matte.shape[1]):
        c = colours[i % len(colours)]
        ax.plot(steps, matte[:, i], color=c, label=f"person {i} matte")
        ax.plot(steps, mask[:, i], color=c, linestyle="--", alpha=0.6, label=f"person {i} mask")
    ax.set_xlabel("frame t")
    ax.set_ylabel("mean |x_t - x_(t-1)|")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    write_figure(path, fig)


def _frames_with_masks(frames: list[Path], sources: list[MaskSource], names: list[str]):
    for f, source in zip(frames, sources, strict=True):
        image = read_rgb(f)
        yield image, source.read(names, image.shape[:2])


def run_videos(predictor, folder: Path, mask_dir: str, videos: list[str], out: Path) -> dict[str, Any]:
    rows = {}
    for video in tqdm(videos, desc="qualitative videos", unit="video"):
        frames = _files(folder / "fgr" / video)
        if not frames:
            raise DataError(f"{folder / 'fgr' / video}: no frames")
        sources = frame_mask_sources(folder / mask_dir / video, len(frames), [f.stem for f in frames])
        names = union_names(sources)
        if not names:
            raise DataError(f"{folder / mask_dir / video}: no masks for any frame")

        mattes, masks, picks = [], [], []
        keep = set(np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int).tolist())
        stream = _frames_with_masks(frames, sources, names)
        for t, (image, mask, alpha) in enumerate(predictor.video_with_inputs(stream)):
            mattes.append(alpha)
            masks.append(mask)
            if t in keep:
                picks.append([label(image, f"{video} t={t}"), label(overlay(image, mask.astype(np.float32)), "mask"),
                              label(overlay(image, alpha), "matte"), label(colour_mattes(alpha), "mattes")])
        matte_change, mask_change = frame_change(np.stack(mattes)), frame_change(np.stack(masks))
        write_png(out / f"{video}_preview.png", grid(picks))
        if len(frames) > 1:
            stability_plot(out / f"{video}_stability.png", f"{video}: frame-to-frame change", matte_change,
                           mask_change)
        rows[video] = {
            "frames": len(frames), "instances": len(names),
            "matte_change_mean": [round(float(v), 6) for v in matte_change.mean(0)] if len(frames) > 1 else [],
            "mask_change_mean": [round(float(v), 6) for v in mask_change.mean(0)] if len(frames) > 1 else [],
            "matte_change_max": [round(float(v), 6) for v in matte_change.max(0)] if len(frames) > 1 else [],
        }
    return rows


def run_images(predictor, folder: Path, mask_dir: str, images: list[str], out: Path) -> dict[str, Any]:
    tiles, rows = [], {}
    by_stem = {p.stem: p for p in _files(folder / "images")}
    for name in tqdm(images, desc="qualitative images", unit="image"):
        image = read_rgb(by_stem[name])
        source = find_mask(folder / mask_dir, name)
        names = source.instance_names()
        masks = source.read(names, image.shape[:2])
        alpha = predictor.image(image, masks)
        rows[name] = {"instances": len(names)}
        tiles.append([label(image, name), label(overlay(image, masks.astype(np.float32)), "mask"),
                      label(overlay(image, alpha), "matte"), label(colour_mattes(alpha), "mattes")])
    if tiles:
        write_png(out / "images_preview.png", grid(tiles))
    return rows


def run(params_path: str, device: str = "auto") -> dict[str, Any]:
    params = load_params(params_path)
    q = section(params, "test.qualitative")
    out = Path(q.get("out_dir") or "eval/qualitative")
    summary: dict[str, Any] = {"dir": q.get("dir") or "", "videos": {}, "images": {}}
    remove_stale_partials(out.parent)
    with atomic_dir(out) as tmp:
        _run(params, q, summary, device, tmp)
    return summary


def _run(params: dict[str, Any], q: dict[str, Any], summary: dict[str, Any], device: str, tmp: Path) -> None:
    from maggie.inference.predictor import Predictor

    if q.get("dir"):
        folder, mask_dir = Path(q["dir"]), q.get("mask_dir", "masks")
        found = discover(folder, mask_dir)
        if q.get("limit"):
            found = {k: v[:int(q["limit"])] for k, v in found.items()}
        short = int(q.get("short_size") or section(params, "test")["short_size"])
        settings = {"short_size": short, "device": device,
                    "sum_to_one": section(params, "test").get("sum_to_one", False)}
        vid = section(params, "test.video")
        if vid.get("meeting_short_size"):   # the second run keeps its ratio to the short side
            ratio = vid["meeting_short_size"] / section(params, "test")["short_size"]
            settings.update(meeting_short_size=round(ratio * short), meeting_radius=vid.get("meeting_radius", 4))
        if found["videos"]:
            video_weights = best_weights(params, "video")
            summary["videos"] = run_videos(Predictor(video_weights, **settings), folder,
                                           mask_dir, found["videos"], tmp)
        if found["images"]:
            image_weights = best_weights(params, "image")
            summary["images"] = run_images(Predictor(image_weights, **settings), folder,
                                           mask_dir, found["images"], tmp)
    else:
        log.info("test.qualitative.dir is empty: nothing to do")
    write_json(tmp / "summary.json", summary)
