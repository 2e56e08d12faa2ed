"""``maggie`` command line: ``maggie predict`` (images, image folders, videos), ``maggie masks``, ``maggie demo``
and ``maggie export``.

    maggie masks clip.mp4 --first clip_first_masks/ --weights models/image/best.safetensors --out clip_masks/
    maggie predict photo.jpg --masks photo_masks/ --out results/
    maggie predict clip.mp4 --masks clip_masks/ --out results/ --outputs alpha,composite,alpha_video
    maggie export --onnx maggie.onnx --weights models/image/best.safetensors
    maggie demo --weights models/video/best.safetensors --segmenter yolo11n-seg.onnx

Every bad input ends with one line naming the file and the problem, exit code 2, and no
output: results are staged in a hidden sibling folder and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from maggie.errors import DataError
from maggie.files import partial_path, remove_stale_partials, replace_dir
from maggie.inference.inputs import (
    DEFAULT_MAX_PIXELS,
    InputError,
    VideoInput,
    find_mask,
    frame_mask_sources,
    image_files,
    is_video,
    read_image,
    union_names,
)
from maggie.inference.outputs import DEFAULT_KINDS, KINDS, VIDEO_KINDS, OutputWriter, parse_background, parse_kinds
from maggie.models import WeightsError
from maggie.runtime import keep_freed_memory

log = logging.getLogger("maggie")


def _predictor(args: argparse.Namespace):
    """The network: ``args.predictor`` when the caller holds one (``maggie demo`` loads it once), else loaded."""
    from maggie.inference.predictor import Predictor

    if getattr(args, "predictor", None) is not None:
        return args.predictor
    return Predictor(args.weights, short_size=args.short_size, device=args.device, precision=args.precision,
                     sum_to_one={None: False, "scale": True, "guided": "guided"}[args.sum_to_one],
                     meeting_short_size=getattr(args, "meeting_short_size", None),
                     models_dir=args.models_dir)


def predict_images(args, stage: Path, kinds) -> int:
    inp, masks = Path(args.input), Path(args.masks)
    single = inp.is_file()
    files = [inp] if single else image_files(inp)
    if not files:
        raise InputError(f"{inp}: no images (.jpg, .jpeg, .png)")
    plan = [(f, find_mask(masks, f.stem, single=single)) for f in files]  # every mask checked before any work
    people = [src.instance_names() for _, src in plan]
    if not any(people):
        raise InputError(f"{masks}: no person in any mask (nothing to matte)")
    predictor = _predictor(args)
    writer = OutputWriter(stage, kinds, args.background)
    for (f, src), names in tqdm(zip(plan, people, strict=True), desc="predict", unit="img", total=len(plan),
                                disable=len(plan) == 1):
        rgb = read_image(f, args.max_pixels, args.short_size)
        alphas = predictor.image(rgb, src.read(names, rgb.shape[:2]))
        writer.image(f.stem, rgb, alphas, names)
    writer.close()
    return len(plan)


def chunked(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Decode ``size`` frames at a time (a read-ahead buffer); results do not depend on it."""
    buf: list[np.ndarray] = []
    for f in frames:
        buf.append(f)
        if len(buf) >= size:
            yield from buf
            buf = []
    yield from buf


def predict_video(args, stage: Path, kinds) -> int:
    video = VideoInput(Path(args.input), args.max_pixels)
    sources = frame_mask_sources(Path(args.masks), video.count, video.stems)
    names = union_names(sources)
    if not names:
        raise InputError(f"{args.masks}: no person in any frame's masks")
    stems = video.stems or [f"{i:05d}" for i in range(video.count)]
    if "composite" in kinds:
        parse_background(args.background, video.shape)  # a bad --background fails before any work
    predictor = _predictor(args)
    writer = OutputWriter(stage, kinds, args.background, fps=video.fps,
                          audio_from=Path(args.input) if is_video(Path(args.input)) else None)

    def stream():
        for i, frame in enumerate(chunked(video.frames(), args.chunk)):
            if i >= len(sources):
                raise InputError(f"{args.input}: more frames than the {len(sources)} mask entries in {args.masks}")
            yield frame, sources[i].read(names, frame.shape[:2])

    count = 0
    for frame, _, alphas in tqdm(predictor.video_with_inputs(stream()), total=video.count, desc="predict",
                                 unit="frame"):
        writer.frame(stems[count], frame, alphas, names)
        count += 1
    writer.close()
    if count != len(sources):
        raise InputError(f"{args.input}: {count} frames decoded but {len(sources)} mask entries in {args.masks}")
    return count


def inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_out(out_arg: str, inputs: dict[str, Path], overwrite: bool) -> None:
    """Refuse an --out that holds an input, is a file, or (without --overwrite) is a non-empty folder."""
    out = Path(out_arg).resolve()
    for what, given in inputs.items():
        if inside(given, out):
            raise InputError(f"{out_arg}: holds {what} ({given}); replacing it would delete it, use another --out")
    if out.is_file():
        raise InputError(f"{out_arg}: is a file; --out names a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out_arg}: exists and is not empty; pass --overwrite to replace it")


def cmd_masks(args: argparse.Namespace) -> int:
    from maggie.inference.mask_command import write_masks

    for given in (args.input, args.first, args.keys, args.segmenter):
        if given is not None and not Path(given).exists():
            raise InputError(f"{given}: no such file or folder")
    inputs = {"the input": Path(args.input)}
    if args.first:
        inputs["the first-frame masks"] = Path(args.first)
    check_out(args.out, inputs, args.overwrite)
    n, people, what = write_masks(args)
    print(f"maggie: wrote the masks of up to {people} people for {n} {what} to {Path(args.out).resolve()}")
    return 0


def _masks_args(args: argparse.Namespace, as_video: bool) -> argparse.Namespace:
    """``maggie masks`` settings for ``predict --masks auto``: the tracker re-anchored by predict's network."""
    return argparse.Namespace(input=args.input, first=args.first, keys=None, segmenter=args.segmenter,
                              score=args.score, min_area=args.min_area, weights=args.weights if as_video else None,
                              models_dir=args.models_dir, short_size=args.short_size, device=args.device,
                              preset="medium", flow_side=512, max_pixels=args.max_pixels, video=as_video)


def cmd_predict(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    inp = Path(args.input)
    if args.short_size < 32:
        raise InputError(f"--short-size {args.short_size}: at least 32 (the network's stride)")
    if args.max_pixels < 1:
        raise InputError(f"--max-pixels {args.max_pixels}: must be positive")
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    auto = args.masks == "auto"
    if auto and not args.segmenter and not args.first:
        raise InputError("--masks auto: pass --segmenter model.onnx (images, or a video's first frame) or, "
                         "for a video, --first with its first frame's masks")
    if not auto and not Path(args.masks).exists():
        raise InputError(f"{args.masks}: no such mask file or folder")
    check_out(args.out, {"the input": inp} if auto else {"the input": inp, "the masks": Path(args.masks)},
              args.overwrite)
    kinds = parse_kinds(args.outputs)
    as_video = is_video(inp) or (args.video and inp.is_dir())
    for kind in VIDEO_KINDS:
        if kind in kinds and not as_video:
            raise InputError(f"{inp}: {kind} output needs a video input")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out.parent)  # what a killed run (SIGKILL) left behind
    stage = partial_path(out)
    stage.mkdir()
    try:
        if auto:  # the guidance made here is kept beside the mattes, in <out>/masks
            from maggie.inference.mask_command import write_masks
            from maggie.inference.predictor import newest_trained_weights

            args.weights = args.weights or str(newest_trained_weights(args.models_dir))
            write_masks(_masks_args(args, as_video), stage / "masks")
            args.masks = str(stage / "masks")
        n = predict_video(args, stage, kinds) if as_video else predict_images(args, stage, kinds)
        replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    print(f"maggie: wrote {', '.join(kinds)} for {n} {'frames' if as_video else 'images'} to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from maggie.inference.export import export_onnx

    export_onnx(args.weights, args.onnx, models_dir=args.models_dir, opset=args.opset)
    print(f"maggie: wrote {args.onnx}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maggie.inference.demo import launch

    launch(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="maggie", description="Mask-guided human instance matting (MaGGIe).")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="mattes for an image, a folder of images or a video")
    p.add_argument("input", help="image file, folder of images, or video file (mp4/mov/avi ...)")
    p.add_argument("--masks", required=True, help="per-instance PNG folders (<image>/00.png ...) or ID maps "
                                                  "(<image>.png, 0 = background, k = person k); 'auto': made "
                                                  "by --segmenter (and, for a video, tracked; see maggie masks)")
    p.add_argument("--segmenter", default=None, help="with --masks auto: a YOLO segmentation ONNX export")
    p.add_argument("--first", default=None, help="with --masks auto, for a video: its first frame's masks")
    p.add_argument("--score", type=float, default=0.4, help="segmenter: smallest person score kept")
    p.add_argument("--min-area", type=float, default=0.002, help="segmenter: smallest mask kept (image fraction)")
    p.add_argument("--out", required=True, help="output folder (replaced only with --overwrite)")
    p.add_argument("--weights", default=None, help="checkpoint file, official safetensors, hub id, or an .onnx file "
                                                   "from maggie export (run by onnxruntime; default: newest trained "
                                                   "under --models-dir)")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--outputs", default=",".join(DEFAULT_KINDS), help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--background", default="#00ff00", help="composite background: #RRGGBB, R,G,B or an image")
    p.add_argument("--short-size", type=int, default=576, help="inference short side (padded to a multiple of 32)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), or a torch device")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--sum-to-one", nargs="?", const="scale", default=None, choices=["scale", "guided"],
                   help="where the people's mattes add up to more than 1 (true mattes never do): 'scale' them all "
                   "down alike, or 'guided': those whose mask does not cover the pixel give way first (the default "
                   "pipeline evaluates with test.sum_to_one; the reference has neither)")
    p.add_argument("--meeting-short-size", type=int, default=None,
                   help="videos: also run at this short side and average it in where two people's masks meet (the "
                   "default pipeline evaluates with test.video.meeting_short_size, 4/3 of its short side; not in "
                   "the reference)")
    p.add_argument("--video", action="store_true", help="treat a folder of images as the frames of one video")
    p.add_argument("--chunk", type=int, default=8, help="video frames decoded ahead at a time")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger inputs (and inputs that would be larger at --short-size); default 40M")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_predict)
    m = sub.add_parser("masks", help="guidance masks: people segmented in images, or tracked through a video")
    m.add_argument("input", help="image, folder of images, or video file (a folder of frames with --video)")
    m.add_argument("--out", required=True, help="output folder: <image or frame>/NN.png, what predict --masks reads")
    m.add_argument("--segmenter", default=None, help="YOLO segmentation ONNX export (Ultralytics' layout): the "
                                                     "people of images, or of a video's first frame")
    m.add_argument("--score", type=float, default=0.4, help="segmenter: smallest person score kept")
    m.add_argument("--min-area", type=float, default=0.002, help="segmenter: smallest mask kept (image fraction)")
    m.add_argument("--first", default=None, help="video: the first frame's masks (a folder of NN.png or an ID map)")
    m.add_argument("--keys", default=None, help="video: folder of later key frames' masks (<frame>/NN.png or "
                                                "<frame>.png, <frame> the frame's file stem or its 5-digit index)")
    m.add_argument("--video", action="store_true", help="treat a folder of images as the frames of one video")
    m.add_argument("--weights", default=None, help="video: image network whose mattes re-anchor the tracker on "
                                                   "every frame (recommended: flow alone drifts)")
    m.add_argument("--models-dir", default="models")
    m.add_argument("--short-size", type=int, default=576, help="the network's inference short side (with --weights)")
    m.add_argument("--device", default="auto")
    m.add_argument("--preset", default="medium", choices=["ultrafast", "fast", "medium"], help="DIS optical flow")
    m.add_argument("--flow-side", type=int, default=512, help="the flow's longer side in px")
    m.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=cmd_masks)

    d = sub.add_parser("demo", help="a web page for images and short videos (Gradio; pip install -e '.[demo]')")
    d.add_argument("--weights", default=None, help="as for predict (default: newest trained under --models-dir)")
    d.add_argument("--models-dir", default="models")
    d.add_argument("--segmenter", default=None, help="YOLO segmentation ONNX export: enables the 'auto' guidance")
    d.add_argument("--short-size", type=int, default=576, help="inference short side")
    d.add_argument("--device", default="auto")
    d.add_argument("--background", default="#00ff00", help="composite background: #RRGGBB, R,G,B or an image")
    d.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    d.add_argument("--port", type=int, default=7860)
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("export", help="export the image network (dense refinement) to ONNX")
    e.add_argument("--onnx", required=True, help="output .onnx file")
    e.add_argument("--weights", default=None, help="as for predict (image weights)")
    e.add_argument("--models-dir", default="models")
    e.add_argument("--opset", type=int, default=17)
    e.set_defaults(func=cmd_export)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "chunk", 1) < 1:
        print("maggie: error: --chunk must be at least 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)  # timeout, docker stop, SLURM: clean up the staging folder
    keep_freed_memory()  # large tensors reuse mapped pages (maggie.runtime)
    try:
        return args.func(args)
    except (DataError, WeightsError, ValueError, OSError) as exc:
        print(f"maggie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maggie: interrupted; nothing was written", file=sys.stderr)
        return 130


def _terminate(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
