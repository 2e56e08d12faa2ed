"""``maggie masks``: guidance masks in the layouts ``maggie predict --masks`` reads.

* an image or a folder of images, with ``--segmenter model.onnx``: ``<out>/<image stem>/NN.png``;
* a video (file, or folder of frames with ``--video``): its first frame's masks (``--first``, or the
  segmenter's on the first frame) carried through it by the flow tracker (``maggie.inference.tracking``),
  re-anchored on the network's mattes with ``--weights``: ``<out>/<frame>/NN.png``.

Masks are written 0 or 255, into a staging folder that replaces ``--out`` only when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maggie.files import atomic_dir, write_png
from maggie.inference.inputs import (
    InputError,
    MaskSource,
    VideoInput,
    find_mask,
    image_files,
    is_video,
    read_image,
    union_names,
)
from maggie.inference.tracking import TrackerSettings, propagate


def key_sources(keys: Path, stems: list[str]) -> dict[int, MaskSource]:
    """Key-frame masks under ``keys``, by frame: entries named by the frame's stem or its 5-digit index."""
    if not keys.is_dir():
        raise InputError(f"{keys}: --keys names a folder of per-frame masks")
    index = {s: i for i, s in enumerate(stems)}
    out: dict[int, MaskSource] = {}
    for p in sorted(keys.iterdir()):
        if not (p.is_dir() or p.suffix.lower() == ".png"):
            continue
        name = p.name if p.is_dir() else p.stem
        if name not in index:
            raise InputError(f"{p}: no frame named '{name}' (frames are {stems[0]} .. {stems[-1]})")
        out[index[name]] = MaskSource(p)
    return out


def _segmenter(args: argparse.Namespace):
    from maggie.inference.segmenter import OnnxPersonSegmenter, SegmenterSettings

    return OnnxPersonSegmenter(args.segmenter, SegmenterSettings(score=args.score, min_area=args.min_area))


def _write(folder: Path, masks: np.ndarray, names: list[str]) -> None:
    folder.mkdir()
    for name, m in zip(names, masks, strict=True):
        write_png(folder / f"{name}.png", m * np.uint8(255))


def segment_images(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    """Every image's people, from the segmenter; returns (images, most people in one image)."""
    inp = Path(args.input)
    files = [inp] if inp.is_file() else image_files(inp)
    if not files:
        raise InputError(f"{inp}: no images (.jpg, .jpeg, .png)")
    if not args.segmenter:
        raise InputError(f"{inp}: masks for images come from a segmenter: pass --segmenter model.onnx")
    seg, most = _segmenter(args), 0
    for f in tqdm(files, desc="masks", unit="img", disable=len(files) == 1):
        masks = seg(read_image(f, args.max_pixels))
        most = max(most, len(masks))
        _write(out / f.stem, masks, [f"{i:02d}" for i in range(len(masks))])
    return len(files), most


def track_video(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    """A video's masks from its first (and key) frames' masks; returns (frames, people)."""
    video = VideoInput(Path(args.input), args.max_pixels)
    stems = video.stems or [f"{i:05d}" for i in range(video.count)]
    if args.first:
        sources = {0: find_mask(Path(args.first), stems[0], single=True)}
        names = union_names(list(sources.values()))
        keys = {}
    elif args.segmenter:
        first = _segmenter(args)(next(iter(video.frames())))
        sources, names, keys = {}, [f"{i:02d}" for i in range(len(first))], {0: first}
    else:
        raise InputError(f"{args.input}: give the first frame's masks (--first) or a segmenter (--segmenter)")
    if args.keys:
        extra = {t: s for t, s in key_sources(Path(args.keys), stems).items() if t != 0}
        names = sorted(set(names) | set(union_names(list(extra.values()))), key=lambda n: (len(n), n))
        sources.update(extra)
    if not names:
        raise InputError(f"{args.first or args.segmenter}: no person in the first frame")
    keys.update({t: s.read(names, video.shape) for t, s in sources.items()})
    if keys[0].shape[0] < len(names):  # people who appear only in later key frames start empty
        keys[0] = np.concatenate([keys[0], np.zeros((len(names) - len(keys[0]), *video.shape), np.uint8)])
    anchor = None
    if args.weights:
        from maggie.inference.predictor import Predictor

        predictor = Predictor(args.weights, short_size=args.short_size, device=args.device,
                              models_dir=args.models_dir)

        def anchor(t: int, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
            return predictor.image(frame, masks)

    settings = TrackerSettings(preset=args.preset, flow_side=args.flow_side)
    tracked = propagate(video.frames(), keys, settings, anchor)
    count = 0
    for stem, masks in tqdm(zip(stems, tracked, strict=False), total=len(stems), desc="masks", unit="frame"):
        _write(out / stem, masks, names)
        count += 1
    return count, len(names)


def write_masks(args: argparse.Namespace, out: Path | None = None) -> tuple[int, int, str]:
    """Masks of ``args.input`` into ``out`` (default: ``args.out``, replaced when complete);
    returns (images or frames, people, 'frames' or 'images')."""
    inp = Path(args.input)
    as_video = is_video(inp) or (args.video and inp.is_dir())
    make = track_video if as_video else segment_images
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        n, people = make(args, out)
    else:
        with atomic_dir(args.out) as tmp:
            n, people = make(args, tmp)
    return n, people, "frames" if as_video else "images"
