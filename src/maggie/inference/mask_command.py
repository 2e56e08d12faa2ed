"""``maggie masks``: a whole video's guidance masks from its first frame's (and key frames'), written
in the per-frame layout ``maggie predict --masks`` reads (``<out>/<frame>/NN.png``, 0 or 255)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maggie.files import atomic_dir, write_png
from maggie.inference.inputs import InputError, MaskSource, VideoInput, find_mask, union_names
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


def write_tracked_masks(args: argparse.Namespace) -> tuple[int, int]:
    """Track, then write every frame's masks; returns (frames, people)."""
    video = VideoInput(Path(args.input), args.max_pixels)
    stems = video.stems or [f"{i:05d}" for i in range(video.count)]
    sources = {0: find_mask(Path(args.first), stems[0], single=True)}
    if args.keys:
        sources.update({t: s for t, s in key_sources(Path(args.keys), stems).items() if t != 0})
    names = union_names(list(sources.values()))
    if not names:
        raise InputError(f"{args.first}: no person in the first frame's masks")
    keys = {t: s.read(names, video.shape) for t, s in sources.items()}
    anchor = None
    if args.weights:
        from maggie.inference.predictor import Predictor

        predictor = Predictor(args.weights, short_size=args.short_size, device=args.device,
                              models_dir=args.models_dir)

        def anchor(t: int, frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
            return predictor.image(frame, masks)

    settings = TrackerSettings(preset=args.preset, flow_side=args.flow_side)
    count = 0
    with atomic_dir(args.out) as tmp:
        tracked = propagate(video.frames(), keys, settings, anchor)
        for stem, masks in tqdm(zip(stems, tracked, strict=False), total=len(stems), desc="masks", unit="frame"):
            (tmp / stem).mkdir()
            for name, m in zip(names, masks, strict=True):
                write_png(tmp / stem / f"{name}.png", m * np.uint8(255))
            count += 1
    return count, len(names)
