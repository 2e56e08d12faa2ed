"""``maggie demo``: a web page over ``maggie predict`` (Gradio, the ``demo`` extra).

    pip install -e ".[demo]"
    maggie demo --weights models/video/best.safetensors [--segmenter yolo11n-seg.onnx] [--port 7860]

An image or a short video goes in with its guidance: one mask file per person, an instance-ID map, or
``auto`` (the ``--segmenter`` finds the people; a video's first-frame masks are tracked to the end).
Each request runs exactly what ``maggie predict`` runs (same reading, checks and writers) into a
folder of its own, and the page shows each person's matte, the overlay and the composite, with the
RGBA cut-outs and the matte videos to download.  A bad input is shown as the one line ``maggie
predict`` would print, never a stack trace.  The network is loaded once, when the demo starts.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from maggie.errors import DataError
from maggie.inference.inputs import DEFAULT_MAX_PIXELS, InputError
from maggie.models import WeightsError

log = logging.getLogger("maggie.demo")
DEMO_ERRORS = (DataError, WeightsError, ValueError, OSError)
IMAGE_OUTPUTS = "alpha,rgba,overlay,composite"


@dataclass
class DemoSession:
    """The settings every request shares, and the network, loaded once."""

    weights: str
    segmenter: str | None = None
    short_size: int = 576
    device: str = "auto"
    background: str = "#00ff00"
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="maggie-demo-")))
    _predictor: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def predictor(self):
        from maggie.inference.predictor import Predictor

        if self._predictor is None:
            self._predictor = Predictor(self.weights, short_size=self.short_size, device=self.device)
        return self._predictor

    def _request_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="request-", dir=self.root))

    def _predict_args(self, inp: Path, masks: str, first: str | None, out: Path, outputs: str) -> argparse.Namespace:
        return argparse.Namespace(
            input=str(inp), masks=masks, first=first, segmenter=self.segmenter, score=0.4, min_area=0.002,
            out=str(out), weights=self.weights, models_dir="models", outputs=outputs, background=self.background,
            short_size=self.short_size, device=self.device, precision="fp32", video=False, chunk=8,
            max_pixels=DEFAULT_MAX_PIXELS, overwrite=False, predictor=self.predictor())

    def _start(self, given: str | None, what: str) -> tuple[Path, Path]:
        """A request's own folder and its copy of the uploaded ``what`` (image or video)."""
        if not given:
            raise InputError(f"no {what}: upload one")
        work = self._request_dir()
        return work, _copy(Path(given), work / "input")

    def _predict(self, inp: Path, masks: str, first: str | None, out: Path, outputs: str) -> None:
        from maggie.cli import cmd_predict

        with self._lock:  # one network, one request at a time
            cmd_predict(self._predict_args(inp, masks, first, out, outputs))

    def matte_image(self, image: str | None, mask_files: list[str] | None, id_map: str | None,
                    auto: bool) -> dict:
        """One image -> {"status", "mattes" [(png, caption)], "overlay", "composite", "download"}."""
        work, inp = self._start(image, "image")
        masks = "auto" if auto else str(_guidance(mask_files, id_map, work / "masks", inp.stem))
        out = work / "result"
        self._predict(inp, masks, None, out, IMAGE_OUTPUTS)
        alpha_dir = out / "alpha" / inp.stem
        mattes = [(str(p), f"person {p.stem}") for p in sorted(alpha_dir.glob("*.png"))]
        zipped = shutil.make_archive(str(work / f"{inp.stem}_rgba"), "zip", out / "rgba")
        return {"status": f"{len(mattes)} {'person' if len(mattes) == 1 else 'people'} matted",
                "mattes": mattes, "overlay": str(out / "overlay" / f"{inp.stem}.png"),
                "composite": str(out / "composite" / f"{inp.stem}.png"), "download": zipped}

    def matte_video(self, video: str | None, mask_files: list[str] | None, id_map: str | None,
                    auto: bool) -> dict:
        """A video and its first frame's masks (or ``auto``) -> {"status", "composite", "overlay", "download"}."""
        from maggie.inference.video_io import have_pyav

        work, inp = self._start(video, "video")
        first = None if auto else str(_guidance(mask_files, id_map, work / "first", "first"))
        out = work / "result"
        self._predict(inp, "auto", first, out, "overlay,composite,alpha_video" + (",rgba_video" if have_pyav() else ""))
        files = [out / "alpha_videos", out / "rgba_videos"]
        bundle = work / "download"
        for folder in files:
            if folder.is_dir():
                shutil.copytree(folder, bundle / folder.name)
        zipped = shutil.make_archive(str(work / f"{inp.stem}_mattes"), "zip", bundle)
        people = len(list((out / "alpha_videos").glob("*.mp4")))
        return {"status": f"{people} {'person' if people == 1 else 'people'} matted",
                "composite": str(out / "composite.mp4"), "overlay": str(out / "overlay.mp4"), "download": zipped}


def _copy(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, folder / src.name))


def _guidance(mask_files: list[str] | None, id_map: str | None, folder: Path, stem: str) -> Path:
    """The uploaded guidance in a layout ``maggie predict`` reads: ``<folder>/<stem>/NN.png`` (one file per
    person, in the order of their names) or ``<folder>/<stem>.png`` (an ID map)."""
    if mask_files and id_map:
        raise InputError("give either per-person mask files or an ID map, not both")
    folder.mkdir(parents=True, exist_ok=True)
    if id_map:
        return Path(shutil.copy(id_map, folder / f"{stem}.png"))
    if not mask_files:
        raise InputError("no guidance: upload one mask per person, an ID map, or tick 'auto'")
    people = folder / stem
    people.mkdir()
    for i, f in enumerate(sorted(mask_files, key=lambda p: Path(p).name)):
        if Path(f).suffix.lower() != ".png":
            raise InputError(f"{Path(f).name}: masks are PNG files")
        shutil.copy(f, people / f"{i:02d}.png")
    return people


def _safe(fn, empty: tuple):
    """Run a request; a user error becomes the status line (the outputs stay empty)."""
    def run(*args):
        try:
            return fn(*args)
        except DEMO_ERRORS as exc:
            log.info("request refused: %s", exc)
            return (f"error: {exc}", *empty)
    return run


def build_app(session: DemoSession):
    """The Gradio page: an Image tab and a Video tab, each with its guidance inputs and outputs."""
    import gradio as gr

    def image_request(image, mask_files, id_map, auto):
        r = session.matte_image(image, mask_files, id_map, auto)
        return r["status"], r["mattes"], r["overlay"], r["composite"], r["download"]

    def video_request(video, mask_files, id_map, auto, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        progress(0, desc="tracking and matting")
        r = session.matte_video(video, mask_files, id_map, auto)
        return r["status"], r["composite"], r["overlay"], r["download"]

    auto_label = "auto: find the people with the segmenter" if session.segmenter else \
        "auto (start the demo with --segmenter model.onnx to use it)"
    with gr.Blocks(title="MaGGIe: mask-guided human instance matting") as app:
        gr.Markdown("# MaGGIe\nOne soft alpha matte per person, guided by one binary mask per person.")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", label="image", elem_id="image-input")
                    masks = gr.File(file_count="multiple", file_types=[".png"], label="one mask per person (PNG)",
                                    elem_id="image-masks")
                    idmap = gr.File(file_types=[".png"], label="or an ID map (0 = background, k = person k)",
                                    elem_id="image-idmap")
                    auto = gr.Checkbox(label=auto_label, value=False, interactive=bool(session.segmenter))
                    run = gr.Button("Matte", variant="primary", elem_id="image-run")
                with gr.Column():
                    status = gr.Markdown(elem_id="image-status")
                    mattes = gr.Gallery(label="mattes", columns=4, elem_id="image-mattes")
                    over = gr.Image(label="overlay", elem_id="image-overlay")
                    comp = gr.Image(label="composite", elem_id="image-composite")
                    down = gr.File(label="RGBA cut-outs (zip)", elem_id="image-download")
            run.click(_safe(image_request, (None, None, None, None)), [image, masks, idmap, auto],
                      [status, mattes, over, comp, down])
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="video", elem_id="video-input")
                    vmasks = gr.File(file_count="multiple", file_types=[".png"],
                                     label="first frame: one mask per person (PNG)", elem_id="video-masks")
                    vidmap = gr.File(file_types=[".png"], label="or the first frame's ID map", elem_id="video-idmap")
                    vauto = gr.Checkbox(label=auto_label, value=False, interactive=bool(session.segmenter))
                    vrun = gr.Button("Matte", variant="primary", elem_id="video-run")
                with gr.Column():
                    vstatus = gr.Markdown(elem_id="video-status")
                    vcomp = gr.Video(label="composite", elem_id="video-composite")
                    vover = gr.Video(label="overlay", elem_id="video-overlay")
                    vdown = gr.File(label="matte videos (zip)", elem_id="video-download")
            vrun.click(_safe(video_request, (None, None, None)), [video, vmasks, vidmap, vauto],
                       [vstatus, vcomp, vover, vdown])
    return app


def launch(args: argparse.Namespace) -> None:
    """``maggie demo``: load the network, then serve the page until interrupted."""
    from maggie.inference.predictor import newest_trained_weights

    if args.segmenter and not Path(args.segmenter).is_file():
        raise InputError(f"{args.segmenter}: no such segmenter file")
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise InputError("maggie demo needs Gradio: pip install -e \".[demo]\"") from exc
    weights = args.weights or str(newest_trained_weights(args.models_dir))
    session = DemoSession(weights, args.segmenter, args.short_size, args.device, args.background)
    session.predictor()  # a bad checkpoint fails here, before the page is served
    app = build_app(session)
    print(f"maggie demo: http://{args.host}:{args.port} (weights {weights}); Ctrl-C stops it", flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, allowed_paths=[str(session.root)],
                       show_error=False, quiet=True)
