"""Qualitative sets: real images or videos with guidance masks but no true alpha (``test.qualitative``).

    python -m maggie.qualitative --params params.yaml

The folder uses the benchmarks' layouts without the alpha: videos as ``fgr/<video>/<frame>.jpg`` with
masks ``<mask_dir>/<video>/<frame>/NN.png`` (one PNG per person, as a tracker writes them), images as
``images/<name>.jpg`` with ``<mask_dir>/<name>/NN.png``.  With nothing to compare against, it writes
what can be looked at instead of metrics: matte previews, and per video the temporal stability of
every person's matte (mean absolute frame-to-frame change) next to that of its guidance mask.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .data.layout import DataError, read_gray, read_rgb
from .io_utils import replace_dir, write_figure, write_json, write_png
from .models.checkpoint import WeightsError
from .params import ParamsError, load_params, section
from .visualize import colour_mattes, grid, label, overlay

log = logging.getLogger("maggie.qualitative")
EXTS = (".jpg", ".jpeg", ".png")


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS) if folder.is_dir() else []


def read_masks(folder: Path, names: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Binary masks ``[N, H, W]`` in the order of ``names``; a person without a file here is empty."""
    out = np.zeros((len(names), *shape), np.uint8)
    for i, name in enumerate(names):
        path = folder / name
        if path.is_file():
            m = read_gray(path)
            if m.shape != shape:
                raise DataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}, the frame {shape[1]}x{shape[0]}")
            out[i] = m > 127
    return out


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


def _frames_with_masks(frames: list[Path], mask_folder: Path, names: list[str]):
    for f in frames:
        image = read_rgb(f)
        yield image, read_masks(mask_folder / f.stem, names, image.shape[:2])


def run_videos(predictor, folder: Path, mask_dir: str, videos: list[str], out: Path) -> dict[str, Any]:
    rows = {}
    for video in tqdm(videos, desc="qualitative videos", unit="video"):
        frames = _files(folder / "fgr" / video)
        if not frames:
            raise DataError(f"{folder / 'fgr' / video}: no frames")
        names = sorted({p.name for f in frames for p in _files(folder / mask_dir / video / f.stem)})
        if not names:
            raise DataError(f"{folder / mask_dir / video}: no masks for any frame")

        mattes, masks, picks = [], [], []
        keep = set(np.linspace(0, len(frames) - 1, min(4, len(frames))).round().astype(int).tolist())
        stream = _frames_with_masks(frames, folder / mask_dir / video, names)
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
        names = [p.name for p in _files(folder / mask_dir / name)]
        masks = read_masks(folder / mask_dir / name, names, image.shape[:2])
        alpha = predictor.image(image, masks)
        rows[name] = {"instances": len(names)}
        tiles.append([label(image, name), label(overlay(image, masks.astype(np.float32)), "mask"),
                      label(overlay(image, alpha), "matte"), label(colour_mattes(alpha), "mattes")])
    if tiles:
        write_png(out / "images_preview.png", grid(tiles))
    return rows


def run(params_path: str, device: str = "auto") -> dict[str, Any]:
    from .predictor import Predictor

    params = load_params(params_path)
    q = section(params, "test.qualitative")
    out = Path(q.get("out_dir") or "eval/qualitative")
    summary: dict[str, Any] = {"dir": q.get("dir") or "", "videos": {}, "images": {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run
    tmp.mkdir()
    if q.get("dir"):
        folder, mask_dir = Path(q["dir"]), q.get("mask_dir", "masks")
        found = discover(folder, mask_dir)
        if q.get("limit"):
            found = {k: v[:int(q["limit"])] for k, v in found.items()}
        short = int(q.get("short_size") or section(params, "test")["short_size"])
        if found["videos"]:
            video_weights = Path(section(params, "train.video")["out_dir"]) / "best.safetensors"
            summary["videos"] = run_videos(Predictor(video_weights, short_size=short, device=device), folder,
                                           mask_dir, found["videos"], tmp)
        if found["images"]:
            image_weights = Path(section(params, "train.image")["out_dir"]) / "best.safetensors"
            summary["images"] = run_images(Predictor(image_weights, short_size=short, device=device), folder,
                                           mask_dir, found["images"], tmp)
    else:
        log.info("test.qualitative.dir is empty: nothing to do")
    write_json(tmp / "summary.json", summary)
    replace_dir(tmp, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    try:
        summary = run(args.params, args.device)
    except (ParamsError, DataError, WeightsError, OSError) as exc:
        print(f"maggie.qualitative: error: {exc}", file=sys.stderr)
        return 2
    for video, row in summary["videos"].items():
        log.info("%s: matte change %s vs mask change %s", video, row["matte_change_mean"], row["mask_change_mean"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
