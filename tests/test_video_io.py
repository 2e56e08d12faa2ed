"""Video I/O through PyAV: what is encoded decodes back (frame count, H.264, the source's audio, a real
alpha channel), and predict's video outputs use it."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")

H, W, T = 64, 96, 6


def source_with_audio(path, frames: list[np.ndarray], fps: int = 10) -> None:
    """An H.264 + AAC file, as a phone or camera writes."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        for img in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(16000 * T / fps)) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for i in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, i:i + 1024]), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def frames_rgb(seed: int = 0) -> list[np.ndarray]:
    """Smooth colours (what 4:2:0 chroma keeps), moving 2 px a frame."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8), (W, H), interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, 2 * t, axis=1) for t in range(T)]


def test_sinks_round_trip_h264_gray_prores_alpha_and_vp9_alpha(tmp_path):
    from maggie.inference.video_io import AvVideoSink, count_frames, probe

    rgb = frames_rgb()
    alpha = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    cases = {"a.mp4": ("h264", rgb), "g.mp4": ("h264_gray", [alpha] * T),
             "p.mov": ("prores4444", [np.dstack([f, alpha]) for f in rgb]),
             "v.webm": ("vp9_alpha", [np.dstack([f, alpha]) for f in rgb])}
    for name, (codec, frames) in cases.items():
        sink = AvVideoSink(tmp_path / name, 10.0, codec)
        for f in frames:
            sink.write(f)
        sink.close()
        assert count_frames(tmp_path / name) == T, name
    assert probe(tmp_path / "a.mp4")["codec"] == "h264" and probe(tmp_path / "a.mp4")["pix_fmt"] == "yuv420p"
    info = probe(tmp_path / "p.mov")
    assert info["codec"] == "prores" and info["pix_fmt"].startswith("yuva444")  # the decoder gives 12 bits
    with av.open(str(tmp_path / "p.mov")) as c:
        back = next(iter(c.decode(video=0))).to_ndarray(format="rgba")
    assert np.abs(back[..., 3].astype(int) - alpha).max() <= 2, "the alpha channel survives"
    assert np.abs(back[..., :3].astype(int) - rgb[0]).mean() < 3
    # VP9 keeps alpha as a second layer that only libvpx's decoder reads.
    with av.open(str(tmp_path / "v.webm")) as c:
        stream = c.streams.video[0]
        ctx = av.codec.CodecContext.create("libvpx-vp9", "r")
        ctx.extradata = stream.codec_context.extradata
        decoded = [f for p in c.demux(stream) for f in ctx.decode(p)]
    assert decoded and decoded[0].format.name == "yuva420p"
    assert np.abs(decoded[0].to_ndarray(format="rgba")[..., 3].astype(int) - alpha).mean() < 4


def test_reader_decodes_every_frame_ahead_on_a_thread(tmp_path):
    from maggie.inference.video_io import AvFrameReader

    src = tmp_path / "s.mp4"
    source_with_audio(src, frames_rgb())
    got = list(AvFrameReader(src, ahead=2))
    assert len(got) == T and got[0].shape == (H, W, 3)
    src_frames = frames_rgb()
    for t, g in enumerate(got):  # lossy H.264, in order
        errors = [np.abs(g.astype(int) - f).mean() for f in src_frames]
        assert int(np.argmin(errors)) == t and errors[t] < 10, errors
    first = next(iter(AvFrameReader(src, ahead=1)))  # a consumer that stops early does not hang
    assert first.shape == (H, W, 3)


def test_predict_video_outputs_h264_with_audio_and_rgba_with_alpha(tmp_path):
    import torch

    from maggie.cli import main
    from maggie.files import write_png
    from maggie.inference.video_io import count_frames, probe
    from maggie.models.maggie.network import MaGGIe, MaggieConfig
    from maggie.models.weights import save_weights

    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_weights(MaGGIe(MaggieConfig(arch="maggie_image")).eval(), weights)
    src = tmp_path / "clip.mp4"
    source_with_audio(src, frames_rgb())
    for t in range(T):
        m = np.zeros((H, W), np.uint8)
        m[10:54, 20 + 2 * t:50 + 2 * t] = 255
        write_png(tmp_path / "masks" / f"{t:05d}" / "00.png", m)
    out = tmp_path / "out"
    assert main(["predict", str(src), "--masks", str(tmp_path / "masks"), "--weights", str(weights), "--short-size",
                 "64", "--outputs", "alpha,composite,alpha_video,rgba_video", "--out", str(out)]) == 0
    comp = probe(out / "composite.mp4")
    assert comp["codec"] == "h264" and comp["audio"] == "aac" and count_frames(out / "composite.mp4") == T
    assert probe(out / "alpha_videos" / "00.mp4")["codec"] == "h264"
    rgba = probe(out / "rgba_videos" / "00.mov")
    assert rgba["pix_fmt"].startswith("yuva444") and count_frames(out / "rgba_videos" / "00.mov") == T
    import cv2

    png = cv2.imread(str(out / "alpha" / "00002" / "00.png"), cv2.IMREAD_UNCHANGED)
    with av.open(str(out / "rgba_videos" / "00.mov")) as c:
        third = [f for _, f in zip(range(3), c.decode(video=0), strict=False)][2].to_ndarray(format="rgba")
    assert np.abs(third[..., 3].astype(int) - png).max() <= 2, "the cut-out's alpha is the matte"
    # An image input cannot have a video output.
    write_png(tmp_path / "photo.png", frames_rgb()[0])
    write_png(tmp_path / "pm" / "00.png", np.full((H, W), 255, np.uint8))
    assert main(["predict", str(tmp_path / "photo.png"), "--masks", str(tmp_path / "pm"), "--weights", str(weights),
                 "--outputs", "rgba_video", "--out", str(tmp_path / "o2")]) == 2
