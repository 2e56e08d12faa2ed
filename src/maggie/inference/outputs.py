"""What ``maggie predict`` writes, chosen by ``--outputs``, all inside one staging folder.

alpha        alpha/<image>/<NN>.png          per-instance mattes, the published layout
rgba         rgba/<image>/<NN>.png           per-instance cut-outs (RGB + matte as alpha)
overlay      overlay/<image>.png             instances tinted by their mattes (video: overlay.mp4)
composite    composite/<image>.png           all people over --background (video: composite.mp4)
alpha_video  alpha_videos/<NN>.mp4           video only: one grey matte video per instance
rgba_video   rgba_videos/<NN>.mov            video only: per-person cut-outs with a real alpha channel
                                             (ProRes 4444; needs PyAV)

With PyAV installed (``pip install -e ".[video]"``) videos are H.264 (yuv420p), the composite and the
overlay carry the source's audio, and encoding runs on threads (``maggie.inference.video_io``); without
it OpenCV writes mp4v without audio, and ``rgba_video`` is refused.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from maggie.drawing import overlay
from maggie.files import to_uint8
from maggie.inference.inputs import InputError
from maggie.inference.video_io import AvVideoSink, have_pyav

KINDS = ("alpha", "rgba", "overlay", "composite", "alpha_video", "rgba_video")
VIDEO_KINDS = ("alpha_video", "rgba_video")
DEFAULT_KINDS = ("alpha", "overlay")


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"--outputs: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(KINDS)}")
    return kinds


def parse_background(text: str, shape: tuple[int, int]) -> np.ndarray:
    """'#RRGGBB', 'R,G,B' or an image path -> uint8 RGB ``[H, W, 3]``."""
    h, w = shape
    t = text.strip()
    try:
        if t.startswith("#") and len(t) == 7:
            rgb = [int(t[i:i + 2], 16) for i in (1, 3, 5)]
            return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()
        if t.count(",") == 2:
            rgb = [int(v) for v in t.split(",")]
            if all(0 <= v <= 255 for v in rgb):
                return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()
    except ValueError:
        pass
    img = cv2.imread(t, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{t}: --background is neither a colour (#RRGGBB or R,G,B) nor a readable image")
    return cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA)


def composite(rgb: np.ndarray, alphas: np.ndarray, background: np.ndarray) -> np.ndarray:
    a = np.clip(alphas.sum(0), 0.0, 1.0)[:, :, None]
    return np.clip(rgb * a + background * (1.0 - a), 0, 255).astype(np.uint8)


def _png(path: Path, img: np.ndarray) -> None:
    """A PNG inside the staging folder; Python's own write, so a full disk raises instead of passing silently."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: could not encode the PNG")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


class VideoSink:
    def __init__(self, path: Path, fps: float, size: tuple[int, int], colour: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames = path, 0
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]), colour)
        if not self.writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write mp4 here")

    def write(self, img: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and read it back: OpenCV's writer reports no error (a full disk gives an empty mp4)."""
        self.writer.release()
        cap = cv2.VideoCapture(str(self.path))
        try:
            decoded = 0
            while cap.isOpened() and cap.read()[0]:
                decoded += 1
        finally:
            cap.release()
        if decoded != self.frames:
            raise OSError(f"{self.path}: the video holds {decoded} of the {self.frames} frames written "
                          "(is the disk full?)")


class OutputWriter:
    """Writes the chosen outputs of each image or frame under ``root`` (a staging folder)."""

    def __init__(self, root: Path, kinds: tuple[str, ...], background: str = "#00ff00", fps: float = 25.0,
                 audio_from: Path | None = None):
        """``audio_from``: the source video, whose audio the composite and overlay videos carry (PyAV only)."""
        self.root, self.kinds, self.background_spec, self.fps = root, kinds, background, fps
        self.background: np.ndarray | None = None
        self.sinks: dict[str, VideoSink | AvVideoSink] = {}
        self.pyav = have_pyav()
        self.audio_from = audio_from
        if "rgba_video" in kinds and not self.pyav:
            raise InputError("--outputs rgba_video needs PyAV (pip install av): OpenCV writes no alpha channel")

    def _bg(self, shape: tuple[int, int]) -> np.ndarray:
        if self.background is None or self.background.shape[:2] != shape:
            self.background = parse_background(self.background_spec, shape)
        return self.background

    def _instance_pngs(self, stem: str, rgb: np.ndarray, alphas: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """Per-person alpha and RGBA PNGs (the published layout); returns the uint8 mattes."""
        mattes = []
        for i, name in enumerate(names):
            a8 = to_uint8(alphas[i])
            if "alpha" in self.kinds:
                _png(self.root / "alpha" / stem / f"{name}.png", a8)
            if "rgba" in self.kinds:
                _png(self.root / "rgba" / stem / f"{name}.png", np.dstack([rgb, a8]))
            mattes.append(a8)
        return mattes

    def image(self, stem: str, rgb: np.ndarray, alphas: np.ndarray, names: list[str]) -> None:
        self._instance_pngs(stem, rgb, alphas, names)
        if "overlay" in self.kinds:
            _png(self.root / "overlay" / f"{stem}.png", overlay(rgb, alphas))
        if "composite" in self.kinds:
            _png(self.root / "composite" / f"{stem}.png", composite(rgb, alphas, self._bg(rgb.shape[:2])))

    def frame(self, stem: str, rgb: np.ndarray, alphas: np.ndarray, names: list[str]) -> None:
        shape = rgb.shape[:2]
        mattes = self._instance_pngs(stem, rgb, alphas, names)
        if "alpha_video" in self.kinds:
            for name, a8 in zip(names, mattes, strict=True):
                self._sink(f"alpha_videos/{name}.mp4", shape, "h264_gray").write(a8)
        if "rgba_video" in self.kinds:
            for name, a8 in zip(names, mattes, strict=True):
                self._sink(f"rgba_videos/{name}.mov", shape, "prores4444").write(np.dstack([rgb, a8]))
        if "overlay" in self.kinds:
            self._sink("overlay.mp4", shape, "h264", audio=True).write(overlay(rgb, alphas))
        if "composite" in self.kinds:
            self._sink("composite.mp4", shape, "h264", audio=True).write(composite(rgb, alphas, self._bg(shape)))

    def _sink(self, rel: str, shape: tuple[int, int], codec: str, audio: bool = False) -> VideoSink | AvVideoSink:
        if rel not in self.sinks:
            if self.pyav:
                self.sinks[rel] = AvVideoSink(self.root / rel, self.fps, codec, self.audio_from if audio else None)
            else:
                self.sinks[rel] = VideoSink(self.root / rel, self.fps, shape, colour=codec != "h264_gray")
        return self.sinks[rel]

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
