"""Frames per second of video decoding, encoding and of ``maggie predict`` on a video, OpenCV in the network's
thread (before) against PyAV on its own threads (after).

    python benchmarks/bench_video_io.py --frames 48 --size 720x1280 --short-size 192

A synthetic clip (smooth moving colours, AAC audio) and moving masks for two people are made in a scratch
folder; the network is a randomly initialised image network (its speed, not its mattes, matters here).
Results go to ``benchmarks/bench_video_io.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def make_clip(folder: Path, frames: int, h: int, w: int) -> tuple[Path, Path]:
    import av

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    clip = folder / "clip.mp4"
    with av.open(str(clip), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for t in range(frames):
            for p in v.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * t, axis=1), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    masks = folder / "masks"
    for t in range(frames):
        ids = np.zeros((h, w), np.uint8)
        ids[h // 6: h - h // 6, w // 8 + 4 * t: w // 8 + w // 5 + 4 * t] = 1
        ids[h // 5: h - h // 8, w // 2 + 2 * t: w // 2 + w // 5 + 2 * t] = 2
        (masks).mkdir(exist_ok=True)
        cv2.imwrite(str(masks / f"{t:05d}.png"), ids)
    return clip, masks


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", default="720x1280", help="HxW")
    ap.add_argument("--short-size", type=int, default=192)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "bench_video_io.json"))
    args = ap.parse_args()
    import torch

    import maggie.inference.outputs as outputs_mod
    import maggie.inference.video_io as video_io
    from maggie.cli import main as cli
    from maggie.inference.outputs import VideoSink
    from maggie.models.maggie.network import MaGGIe, MaggieConfig
    from maggie.models.weights import save_weights

    available = video_io.have_pyav
    h, w = (int(x) for x in args.size.split("x"))
    result: dict = {"frames": args.frames, "size": [h, w], "short_size": args.short_size,
                    "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip, masks = make_clip(tmp, args.frames, h, w)
        frames = list(video_io.AvFrameReader(clip))
        n = len(frames)

        def decode_cv():
            cap = cv2.VideoCapture(str(clip))
            while cap.read()[0]:
                pass
            cap.release()

        result["decode_fps"] = {"opencv": n / timed(decode_cv),
                                "pyav_thread": n / timed(lambda: sum(1 for _ in video_io.AvFrameReader(clip)))}

        def encode(make):
            sink = make()
            for f in frames:
                sink.write(f)
            sink.close()

        result["encode_fps"] = {
            "opencv_mp4v": n / timed(lambda: encode(lambda: VideoSink(tmp / "e1.mp4", 25.0, (h, w)))),
            "pyav_h264_thread": n / timed(lambda: encode(lambda: video_io.AvVideoSink(tmp / "e2.mp4", 25.0, "h264")))}
        torch.manual_seed(0)
        weights = tmp / "w.safetensors"
        save_weights(MaGGIe(MaggieConfig(arch="maggie_image")).eval(), weights)
        args_cli = ["predict", str(clip), "--masks", str(masks), "--weights", str(weights), "--short-size",
                    str(args.short_size), "--outputs", "alpha,composite", "--overwrite"]
        predict = {}
        for name, pyav in (("opencv, one thread", False), ("pyav, decode and encode threads", True)):
            # Without PyAV: the reader (which imports have_pyav when it decodes) and the writer fall back to OpenCV.
            video_io.have_pyav = outputs_mod.have_pyav = (lambda on=pyav: on)
            try:
                predict[name] = n / timed(lambda: cli([*args_cli, "--out", str(tmp / "res")]))
            finally:
                video_io.have_pyav = outputs_mod.have_pyav = available
        result["predict_fps"] = predict
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
