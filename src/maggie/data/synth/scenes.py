"""One image or one video of the synthetic datasets, from the asset bank and a per-sample generator.

Images follow the I-HIM50K recipe: 2..max figures, each resized to a random height and pasted at up to
``tries`` random positions in a random depth order; a position is rejected when it would hide more than
``1 - min_visible`` of an instance already placed.  Videos animate figures re-rendered from their specs
(translation, scale change, limb motion, optional entering/leaving and crossing) over a background seen
through a slowly panning camera, and are redrawn until their occlusion level is inside the target range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from maggie.data.synth.backgrounds import camera_frame, camera_path, random_crop
from maggie.data.synth.composite import Layer, composite_placed, place_layer
from maggie.data.synth.procedural import AssetBank
from maggie.files import to_uint8

IMAGE_DEFAULTS = {
    "size": [192, 256],
    "min_inst": 2,
    "max_inst": 4,
    "height_range": [0.5, 0.9],
    "min_visible": 0.7,
    "min_area": 0.004,
    "tries": 3,
    "bg_zoom": [0.6, 1.0],
    "jpeg_quality": [90, 95],
    "noise_sigma": [0.0, 0.0],
    "fg_pool": "train",
    "bg_pool": "train",
    "inside": False,  # True: every person wholly inside the canvas (the authors' rule for I-HIM50K)
}
LEVEL_DEFAULTS = {
    "instances": [2, 3],
    "occlusion": [0.0, 0.01],
    "spacing": [1.15, 1.5],
    "height_range": [0.55, 0.85],
    "speed": 0.01,
    "growth": 0.15,
    "cross_prob": 0.0,
    "enter_exit_prob": 0.0,
    "tries": 12,
    "first_frame_visible": True,
}


@dataclass
class Sample:
    image: np.ndarray  # uint8 [T, H, W, 3] (T = 1 for images)
    alphas: np.ndarray  # float32 [T, N, H, W] visible mattes
    jpeg_quality: int = 95
    info: dict = field(default_factory=dict)


def _draw(rng: np.random.Generator, bounds) -> float:
    if isinstance(bounds, (int, float)):
        return float(bounds)
    return float(rng.uniform(float(bounds[0]), float(bounds[1])))


def merged(defaults: dict, cfg: dict, where: str) -> dict:
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **cfg}


def _degrade(image: np.ndarray, cfg: dict, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    sigma = _draw(rng, cfg["noise_sigma"])
    quality = int(round(_draw(rng, cfg["jpeg_quality"])))
    if sigma > 0:
        image = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return to_uint8(image), quality


def image_scene(bank: AssetBank, cfg: dict, rng: np.random.Generator) -> Sample:
    """A multi-person image and its visible instance mattes (instance order shuffled, not depth order)."""
    cfg = merged(IMAGE_DEFAULTS, cfg, "image scene")
    H, W = (int(v) for v in cfg["size"])
    fg_ids, bg_ids = bank.figures(cfg["fg_pool"]), bank.backgrounds(cfg["bg_pool"])
    background = random_crop(bank.background(str(rng.choice(bg_ids))), rng, (H, W), tuple(cfg["bg_zoom"]))
    background = background.astype(np.float32) / 255.0
    min_pixels = float(cfg["min_area"]) * H * W
    for _attempt in range(10):
        count = int(rng.integers(int(cfg["min_inst"]), int(cfg["max_inst"]) + 1))
        chosen = rng.choice(len(fg_ids), count, replace=count > len(fg_ids))
        premults, alphas, visible = [], [], []
        for index in chosen:
            rgb, alpha, _meta = bank.figure(fg_ids[int(index)])
            target = _draw(rng, cfg["height_range"]) * H
            scale = target / alpha.shape[0]
            fw = alpha.shape[1] * scale
            flip = bool(rng.random() < 0.5)
            for _try in range(int(cfg["tries"])):
                if cfg["inside"]:
                    left = rng.uniform(0.0, max(1.0, W - fw))
                    top = rng.uniform(0.0, max(1.0, H - target))
                else:  # people may be cut by the frame, as in photographs
                    left = rng.uniform(-0.25 * fw, max(-0.25 * fw + 1, W - 0.75 * fw))
                    top = rng.uniform(-0.05 * target, max(1.0, H - 0.55 * target))
                layer = Layer(rgb, alpha, (left + fw / 2, top), scale, (alpha.shape[1] / 2, 0.0), flip)
                premult, placed = place_layer(layer, (H, W))
                own = float(placed.sum())
                if own < min_pixels:
                    continue
                kept = [v * (1.0 - placed) for v in visible]
                if all(k.sum() >= cfg["min_visible"] * a.sum() for k, a in zip(kept, alphas, strict=True)):
                    premults.append(premult)
                    alphas.append(placed)
                    visible = [*kept, placed]
                    break
        if len(alphas) >= int(cfg["min_inst"]) or (alphas and _attempt == 9):
            break
    if not alphas:
        raise ValueError(
            "image scene: no figure could be placed; check height_range, min_area and min_visible"
        )
    result = composite_placed(background, premults, alphas)  # paste order = depth order (back to front)
    order = rng.permutation(len(alphas))
    image, quality = _degrade(result.image, cfg, rng)
    return Sample(
        image[None],
        result.alphas[order][None],
        quality,
        {"instances": len(alphas), "depth": [int(k) for k in order]},
    )  # 0 = furthest back


def _plan_tracks(
    bank: AssetBank,
    fg_ids: list[str],
    cfg: dict,
    shape: tuple[int, int],
    frames: int,
    rng: np.random.Generator,
) -> list[dict]:
    H, W = shape
    count = int(rng.integers(int(cfg["instances"][0]), int(cfg["instances"][1]) + 1))
    chosen = rng.choice(len(fg_ids), count, replace=count > len(fg_ids))
    ids = [fg_ids[int(i)] for i in chosen]
    heights = np.array([_draw(rng, cfg["height_range"]) * H for _ in ids])
    widths = np.array([bank.aspect(i) for i in ids]) * heights
    spacing = [_draw(rng, cfg["spacing"]) for _ in range(count - 1)]
    centres = np.concatenate(
        [[0.0], np.cumsum([s * (widths[k] + widths[k + 1]) / 2 for k, s in enumerate(spacing)])]
    )
    span = centres[-1] + (widths[0] + widths[-1]) / 2
    if min(cfg["spacing"]) >= 1.0 and span > 0.95 * W:  # separated figures must fit side by side
        shrink = 0.95 * W / span
        heights, widths, centres, span = heights * shrink, widths * shrink, centres * shrink, span * shrink
    slack = max(0.0, (W - span) / 2)
    centres = centres - centres.mean() + W / 2 + rng.uniform(-slack, slack) * 0.8
    group_speed = rng.uniform(-1, 1) * cfg["speed"] * W
    depth = rng.permutation(count)
    tracks = []
    for k, ident in enumerate(ids):
        speed = (
            group_speed if min(cfg["spacing"]) >= 1.0 else group_speed + rng.uniform(-1, 1) * cfg["speed"] * W
        )
        tracks.append(
            {
                "id": ident,
                "height": float(heights[k]),
                "x": float(centres[k]),
                "vx": float(speed),
                "ground": float(H * rng.uniform(0.9, 1.06) + 0.02 * H * depth[k]),
                "growth": float(rng.uniform(-1, 1) * cfg["growth"]),
                "flip": bool(rng.random() < 0.5),
                "bob": float(rng.uniform(0, 0.01) * H),
                "phase": float(rng.uniform(0, 2 * math.pi)),
                "depth": int(depth[k]),
            }
        )
        length = bank.clip_length(ident)
        if length is not None:  # a filmed clip: a random window of it (played back and forth if short)
            tracks[-1]["window"] = (int(rng.integers(0, max(1, length - frames + 1))), int(min(frames, length)))
    if count > 1 and rng.random() < cfg["cross_prob"]:  # two neighbours walk past each other
        k = int(rng.integers(count - 1))
        gap = tracks[k + 1]["x"] - tracks[k]["x"]
        tracks[k]["vx"] += gap / max(1, frames - 1)
        tracks[k + 1]["vx"] -= gap / max(1, frames - 1)
    if rng.random() < cfg["enter_exit_prob"]:  # one figure enters from (or leaves through) a side
        k = int(rng.integers(count))
        side = -1.0 if rng.random() < 0.5 else 1.0
        edge = W / 2 + side * (W / 2 + widths[k] / 2)
        steps = max(1, frames - 1)
        if rng.random() < 0.5:  # enters: starts just outside, walks in
            tracks[k]["x"] = float(edge)
            tracks[k]["vx"] = float((W / 2 - edge) / steps * rng.uniform(0.6, 1.2))
        else:  # leaves: walks out through that side
            tracks[k]["vx"] = float((edge - tracks[k]["x"]) / steps * rng.uniform(0.8, 1.5))
    return [tracks[i] for i in rng.permutation(count)]  # instance ids unrelated to position or depth


def _render_video(
    bank: AssetBank,
    tracks: list[dict],
    camera: np.ndarray,
    background: np.ndarray,
    shape: tuple[int, int],
    frames: int,
    fps: float,
    scale: float = 1.0,
):
    H, W = int(round(shape[0] * scale)), int(round(shape[1] * scale))
    order = sorted(range(len(tracks)), key=lambda k: tracks[k]["depth"])
    images, visible, own = [], [], []
    for f in range(frames):
        premults, alphas = [], []
        pan = (camera[f, 0] - camera[0, 0]) / camera[f, 2]
        for track in tracks:
            height = track["height"] * (1.0 + track["growth"] * f / max(1, frames - 1)) * scale
            rgb, alpha, anchor, layer_scale = bank.figure_frame(
                track["id"], max(8.0, height), f, fps, tuple(track.get("window", (0, frames)))
            )
            x = (track["x"] + track["vx"] * f - pan) * scale
            y = (track["ground"] + track["bob"] * math.sin(track["phase"] + f)) * scale
            premult, alpha = place_layer(Layer(rgb, alpha, (x, y), layer_scale, anchor, track["flip"]), (H, W))
            premults.append(premult)
            alphas.append(alpha)
        bg = camera_frame(background[f], camera[f] * np.array([1, 1, 1.0 / scale]), (H, W))
        result = composite_placed(bg.astype(np.float32) / 255.0, premults, alphas, order)
        images.append(result.image)
        visible.append(result.alphas)
        own.append(result.unoccluded)
    return np.stack(images), np.stack(visible), np.stack(own)


def _max_occlusion(visible: np.ndarray, own: np.ndarray, min_pixels: float) -> float:
    own_mass = own.sum((2, 3))
    seen = visible.sum((2, 3))
    big = own_mass >= min_pixels
    if not big.any():
        return 1.0
    return float((1.0 - seen[big] / own_mass[big]).max())


def video_scene(
    bank: AssetBank,
    cfg: dict,
    rng: np.random.Generator,
    *,
    size,
    frames: int,
    fps: float,
    fg_pool: str,
    bg_pool: str,
    pan: float = 0.01,
) -> Sample:
    """A multi-person video whose largest instance occlusion lies in ``cfg['occlusion']`` if reachable."""
    cfg = merged(LEVEL_DEFAULTS, cfg, "video level")
    H, W = (int(v) for v in size)
    fg_ids, bg_ids = bank.figures(fg_pool), bank.backgrounds(bg_pool)
    bg_id = str(rng.choice(bg_ids))
    background = [bank.background_frame(bg_id, f) for f in range(frames)]  # a still, or a filmed background
    camera = camera_path(rng, background[0].shape[:2], (H, W), frames, pan)
    lo, hi = (float(v) for v in cfg["occlusion"])
    best, best_gap = None, math.inf
    for attempt in range(int(cfg["tries"])):
        tracks = _plan_tracks(bank, fg_ids, cfg, (H, W), frames, rng)
        _, vis, own = _render_video(bank, tracks, camera, background, (H, W), frames, fps, scale=0.5)
        min_pixels = 0.002 * H * W * 0.25
        if cfg["first_frame_visible"] and (vis[0].sum((1, 2)) < min_pixels).any():
            continue
        occ = _max_occlusion(vis, own, min_pixels)
        gap = max(lo - occ, occ - hi, 0.0)
        if gap < best_gap:
            best, best_gap = (tracks, occ, attempt + 1), gap
        if gap == 0.0:
            break
    if best is None:  # nothing had every figure visible on frame 0: keep the last plan anyway
        best = (tracks, _max_occlusion(vis, own, 0.002 * H * W * 0.25), int(cfg["tries"]))
    tracks, occ, tries = best
    images, visible, _ = _render_video(bank, tracks, camera, background, (H, W), frames, fps)
    info = {
        "instances": len(tracks),
        "max_occlusion": round(occ, 4),
        "in_range": bool(lo <= occ <= hi),
        "tries": tries,
        "figures": [t["id"] for t in tracks],
    }
    return Sample(to_uint8(images), visible, 95, info)
