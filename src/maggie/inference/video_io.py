"""Video files through PyAV (the ``video`` extra): H.264 with the source's audio, mattes with a real alpha
channel, and decoding and encoding on their own threads so the network never waits for I/O.

* ``AvFrameReader(path)``: RGB frames decoded ahead on a thread, a bounded queue between it and the caller.
* ``AvVideoSink(path, fps, codec)``: frames handed to an encoding thread; ``codec`` is one of
  ``h264`` (RGB, yuv420p, the format every editor and browser plays), ``h264_gray`` (a matte as luma),
  ``prores4444`` (RGBA in a .mov, 10-bit with alpha: what compositing tools import) or ``vp9_alpha``
  (RGBA in a .webm with alpha: what browsers play).  ``audio_from`` copies the audio of a source file
  (re-encoded to AAC when its codec does not fit the container).  ``close()`` finishes the file and
  decodes it back, so a full disk or a broken encoder is an error, not a silent short file.

Without PyAV, ``maggie.inference.outputs`` falls back to OpenCV (mp4v, no audio, no alpha).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CODECS = {  # name: (encoder, pixel format of the stream, frame format handed to it, options)
    "h264": ("libx264", "yuv420p", "rgb24", {"crf": "18", "preset": "veryfast"}),
    "h264_gray": ("libx264", "yuv420p", "gray", {"crf": "18", "preset": "veryfast"}),
    "prores4444": ("prores_ks", "yuva444p10le", "rgba", {"profile": "4444"}),
    "vp9_alpha": ("libvpx-vp9", "yuva420p", "rgba", {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
}
_DONE = object()


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class _Worker:
    """A thread draining a bounded queue; the first error it meets is raised in the caller's thread."""

    def __init__(self, handle, maxsize: int = 8) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self._handle = handle
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if self.error is None:
                try:
                    self._handle(item)
                except BaseException as exc:  # kept, raised by put() or join()
                    self.error = exc

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def join(self) -> None:
        self.queue.put(_DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error


class AvVideoSink:
    """Encodes frames (RGB ``[H, W, 3]``, RGBA ``[H, W, 4]`` or grey ``[H, W]`` uint8) on a thread."""

    def __init__(self, path: Path, fps: float, codec: str = "h264", audio_from: Path | None = None) -> None:
        import av

        if codec not in CODECS:
            raise ValueError(f"video codec {codec!r}: expected one of {', '.join(CODECS)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.codec, self.fps, self.frames = path, codec, fps, 0
        self.audio_from = audio_from
        self.container = av.open(str(path), mode="w")
        self.stream = None
        self.worker = _Worker(self._encode)

    def _open_stream(self, h: int, w: int) -> None:
        from fractions import Fraction

        encoder, pix_fmt, _, options = CODECS[self.codec]
        rate = Fraction(self.fps).limit_denominator(1001)
        self.stream = self.container.add_stream(encoder, rate=rate)
        self.stream.width, self.stream.height = w, h
        self.stream.pix_fmt = pix_fmt
        self.stream.options = dict(options)
        if self.audio_from is not None:
            self._audio = _AudioCopy(self.audio_from, self.container)

    def _encode(self, img: np.ndarray) -> None:
        import av

        _, _, fmt, _ = CODECS[self.codec]
        if self.stream is None:
            self._open_stream(img.shape[0] - img.shape[0] % 2, img.shape[1] - img.shape[1] % 2)
        img = np.ascontiguousarray(img[: self.stream.height, : self.stream.width])  # 4:2:0 needs even sizes
        frame = av.VideoFrame.from_ndarray(img, format=fmt)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def write(self, img: np.ndarray) -> None:
        self.worker.put(img)
        self.frames += 1

    def close(self) -> None:
        try:
            self.worker.join()
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
                if self.audio_from is not None:
                    self._audio.copy()
        finally:
            self.container.close()
        decoded = count_frames(self.path)
        if decoded != self.frames:
            raise OSError(f"{self.path}: the video holds {decoded} of the {self.frames} frames written "
                          "(is the disk full?)")


class _AudioCopy:
    """The source's first audio stream into the output: packets copied, or re-encoded to AAC."""

    def __init__(self, source: Path, out) -> None:
        import av

        self.source, self.out, self.stream, self.transcode = source, out, None, False
        with av.open(str(source)) as src:
            if not src.streams.audio:
                return
            audio = src.streams.audio[0]
            try:
                self.stream = out.add_stream_from_template(audio)
            except (ValueError, av.FFmpegError):
                self.stream, self.transcode = out.add_stream("aac", rate=audio.rate), True

    def copy(self) -> None:
        import av

        if self.stream is None:
            return
        with av.open(str(self.source)) as src:
            audio = src.streams.audio[0]
            if self.transcode:
                for frame in src.decode(audio):
                    frame.pts = None
                    for packet in self.stream.encode(frame):
                        self.out.mux(packet)
                for packet in self.stream.encode():
                    self.out.mux(packet)
                return
            for packet in src.demux(audio):
                if packet.dts is None:
                    continue
                packet.stream = self.stream
                self.out.mux(packet)


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """A frame turned as its display matrix says (phones store portrait video as rotated landscape), as
    OpenCV's reader does, so masks drawn on what the user sees fit."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class AvFrameReader:
    """RGB frames of a video file, decoded ahead on a thread (at most ``ahead`` frames held)."""

    def __init__(self, path: Path, ahead: int = 8) -> None:
        self.path, self.ahead = path, ahead

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        q: queue.Queue = queue.Queue(self.ahead)
        stop = threading.Event()

        def decode() -> None:
            try:
                with av.open(str(self.path)) as c:
                    stream = c.streams.video[0]
                    stream.thread_type = "AUTO"
                    for frame in c.decode(stream):
                        if stop.is_set():
                            return
                        q.put(upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0)))
                q.put(_DONE)
            except BaseException as exc:
                q.put(exc)

        thread = threading.Thread(target=decode, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise OSError(f"{self.path}: decoding failed ({item})") from item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a decoder waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)


def probe(path: Path) -> dict:
    """Streams of a file, for tests and users: video codec, pixel format, frames, audio codec (or None)."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        return {"codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt, "width": v.codec_context.width,
                "height": v.codec_context.height, "audio": audio}
