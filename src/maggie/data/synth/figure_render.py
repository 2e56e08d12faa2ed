"""Render a figure spec (see ``figures.py``) to straight RGB + true alpha with numpy and cv2.

Parts are drawn with anti-aliased cv2 primitives (sub-pixel coordinates), composited back to front with
their opacity, then softened with a small Gaussian blur and an optional motion blur applied to the
premultiplied colour and the alpha together, so the colour stays consistent with the matte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from maggie.data.synth.figures import pose_at
from maggie.data.synth.textures import render_texture

SHIFT = 4  # cv2 sub-pixel bits
SCALE = 1 << SHIFT
LEFT_MARGIN, TOP_MARGIN = 0.55, 0.22  # figure units left of x=0 and above the head top
CANVAS_W, CANVAS_H = 1.1, 1.27  # canvas size in figure heights


@dataclass
class FigureRender:
    """A rendered figure: straight colour, alpha, and where the figure's ground point (0, 1) landed."""

    rgb: np.ndarray  # float32 [h, w, 3] in [0, 1]
    alpha: np.ndarray  # float32 [h, w] in [0, 1]
    anchor: tuple[float, float]  # (x, y) pixel position of the point between the feet on the ground


class _Canvas:
    """Premultiplied accumulation buffer with 'over' compositing of drawn parts."""

    def __init__(self, height_px: float):
        self.s = float(height_px)
        self.h = int(math.ceil(CANVAS_H * self.s))
        self.w = int(math.ceil(CANVAS_W * self.s))
        self.premult = np.zeros((self.h, self.w, 3), np.float32)
        self.alpha = np.zeros((self.h, self.w), np.float32)

    def px(self, point) -> tuple[float, float]:
        return ((point[0] + LEFT_MARGIN) * self.s, (point[1] + TOP_MARGIN) * self.s)

    def fixed(self, point) -> tuple[int, int]:
        x, y = self.px(point)
        return int(round(x * SCALE)), int(round(y * SCALE))

    def blank(self) -> np.ndarray:
        return np.zeros((self.h, self.w), np.uint8)

    def capsule(self, mask: np.ndarray, p0, p1, width: float) -> None:
        thickness = max(1, int(round(width * self.s)))
        cv2.line(mask, self.fixed(p0), self.fixed(p1), 255, thickness, cv2.LINE_AA, SHIFT)

    def ellipse(
        self,
        mask: np.ndarray,
        centre,
        half_w: float,
        half_h: float,
        angle: float,
        start: float = 0.0,
        end: float = 360.0,
    ) -> None:
        axes = (max(1, int(round(half_w * self.s * SCALE))), max(1, int(round(half_h * self.s * SCALE))))
        cv2.ellipse(mask, self.fixed(centre), axes, angle, start, end, 255, -1, cv2.LINE_AA, SHIFT)

    def polygon(self, mask: np.ndarray, points) -> None:
        pts = np.array([self.fixed(p) for p in points], np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, SHIFT)

    def over(self, mask: np.ndarray, colour, opacity: float = 1.0) -> None:
        """Composite ``colour`` (RGB triple or full-canvas texture) through ``mask`` on top of the canvas."""
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0 or h == 0:
            return
        m = mask[y : y + h, x : x + w].astype(np.float32) * (opacity / 255.0)
        if isinstance(colour, np.ndarray) and colour.ndim == 3:
            col = colour[y : y + h, x : x + w]
        else:
            col = np.asarray(colour, np.float32)
        region = self.premult[y : y + h, x : x + w]
        region *= (1.0 - m)[..., None]
        region += col * m[..., None]
        a = self.alpha[y : y + h, x : x + w]
        a *= 1.0 - m
        a += m


def _dir(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])


def _skeleton(body: dict, pose: dict) -> dict:
    """Joint positions in figure units from the body proportions and the joint angles."""
    lean = pose["lean"]
    up, right = -_dir(lean), np.array([math.cos(math.radians(lean)), math.sin(math.radians(lean))])
    hip = np.array([0.0, body["head_h"] + body["neck"] + body["torso"]])
    neck_base = hip + up * body["torso"]
    head_angle = lean + pose["head"]
    joints = {
        "hip": hip,
        "neck_base": neck_base,
        "up": up,
        "right": right,
        "head_angle": head_angle,
        "head": neck_base - _dir(head_angle) * (body["neck"] + body["head_h"] / 2),
    }
    for side, sign in (("l", -1.0), ("r", 1.0)):
        shoulder = neck_base + right * sign * body["shoulder_w"] / 2 - up * 0.02
        elbow = shoulder + _dir(pose[f"arm_{side}"] + lean) * body["upper_arm"]
        wrist = elbow + _dir(pose[f"arm_{side}"] + pose[f"elbow_{side}"] + lean) * body["forearm"]
        hip_side = hip + right * sign * body["hip_w"] / 2
        knee = hip_side + _dir(pose[f"leg_{side}"]) * body["thigh"]
        ankle = knee + _dir(pose[f"leg_{side}"] + pose[f"knee_{side}"]) * body["shin"]
        joints.update(
            {
                f"shoulder_{side}": shoulder,
                f"elbow_{side}": elbow,
                f"wrist_{side}": wrist,
                f"hip_{side}": hip_side,
                f"knee_{side}": knee,
                f"ankle_{side}": ankle,
            }
        )
    return joints


def _strands(hair: dict, j: dict, body: dict, height_px: float, long_layer: bool) -> list[np.ndarray]:
    """Polylines (figure units) of hair strands rooted on the scalp, bent by gravity and curl."""
    rng = np.random.default_rng(hair["seed"] + (1 if long_layer else 0))
    count = max(12, int(hair["strands"] * min(1.5, height_px / 256.0)))
    spread = math.radians(hair["spread"] if long_layer else 105.0)
    theta = rng.uniform(-spread, spread, count)
    head_angle = math.radians(j["head_angle"])
    rot = np.array(
        [[math.cos(head_angle), -math.sin(head_angle)], [math.sin(head_angle), math.cos(head_angle)]]
    )
    local = np.stack([np.sin(theta) * body["head_w"] / 2, -np.cos(theta) * body["head_h"] / 2], 1) * 0.97
    roots = j["head"] + local @ rot.T
    direction = np.stack([np.sin(theta), -np.cos(theta)], 1) @ rot.T
    if long_layer:
        lengths = hair["length"] * rng.uniform(0.45, 1.0, count)
        gravity = hair["gravity"] * 2.0
    else:
        lengths = body["head_h"] * rng.uniform(0.08, 0.3, count) + hair["length"] * rng.uniform(
            0.2, 0.6, count
        )
        gravity = hair["gravity"] * 0.6
    points, n_points = [roots], 7
    curl_freq = rng.uniform(1.0, 3.0, count)
    curl_phase = rng.uniform(0, 2 * math.pi, count)
    step = (lengths / (n_points - 1))[:, None]
    current = roots.copy()
    for k in range(1, n_points):
        direction = direction + np.array([0.0, gravity])
        perp = np.stack([-direction[:, 1], direction[:, 0]], 1)
        direction = direction + perp * (hair["curl"] * np.sin(curl_freq * k + curl_phase))[:, None] * 0.4
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
        current = current + direction * step
        points.append(current)
    return list(np.stack(points, 1))


def _draw_hair(canvas: _Canvas, hair: dict, j: dict, body: dict, long_layer: bool) -> None:
    strands = _strands(hair, j, body, canvas.s, long_layer)
    colour = np.asarray(hair["colour"], np.float32)
    lo, hi = hair["opacity"]
    n_batches = 3
    for b in range(n_batches):
        mask = canvas.blank()
        pts = [
            np.round((s + (LEFT_MARGIN, TOP_MARGIN)) * (canvas.s * SCALE)).astype(np.int32)
            for s in strands[b::n_batches]
        ]
        cv2.polylines(mask, pts, False, 255, 1, cv2.LINE_AA, SHIFT)
        shade = np.clip(colour * (0.8 + 0.2 * b), 0.0, 1.0)
        canvas.over(mask, shade, lo + (hi - lo) * b / (n_batches - 1))


def render_figure(spec: dict, height_px: float, t: float = 0.0) -> FigureRender:
    """Render ``spec`` so the figure is ``height_px`` tall, in its pose at time ``t`` (seconds)."""
    if height_px < 8:
        raise ValueError(f"render_figure: height_px must be at least 8, got {height_px}")
    body, pose = spec["body"], pose_at(spec, t)
    j = _skeleton(body, pose)
    c = _Canvas(height_px)
    shape = (c.h, c.w)
    top = render_texture(spec["top"], shape, c.s)
    bottom = render_texture(spec["bottom"], shape, c.s)
    hair = spec.get("hair")
    if hair and hair["long"]:  # hair falling behind the shoulders
        back = c.blank()
        head = j["head"]
        c.polygon(
            back,
            [
                head + np.array([-body["head_w"] * 0.55, 0.0]),
                head + np.array([body["head_w"] * 0.55, 0.0]),
                head + np.array([body["head_w"] * 0.6, hair["length"] * 0.7]),
                head + np.array([-body["head_w"] * 0.6, hair["length"] * 0.7]),
            ],
        )
        c.over(back, hair["colour"])
        _draw_hair(c, hair, j, body, long_layer=True)
    legs = c.blank()
    shoes = c.blank()
    for side in ("l", "r"):
        c.capsule(legs, j[f"hip_{side}"], j[f"knee_{side}"], body["leg_w"])
        c.capsule(legs, j[f"knee_{side}"], j[f"ankle_{side}"], body["leg_w"] * 0.85)
        toe = j[f"ankle_{side}"] + np.array([0.035 if side == "r" else -0.035, 0.005])
        c.capsule(shoes, j[f"ankle_{side}"], toe, body["leg_w"] * 0.7)
    c.over(legs, bottom)
    c.over(shoes, spec["shoes"])
    skirt = spec.get("skirt")
    right, up = j["right"], j["up"]
    if skirt:
        mask = c.blank()
        half = body["hip_w"] / 2 + body["leg_w"] / 2
        waist_y = j["hip"] + up * 0.04
        hem = j["hip"] + np.array([0.0, skirt["length"]])
        c.polygon(
            mask,
            [
                waist_y - right * half,
                waist_y + right * half,
                hem + np.array([half * skirt["flare"], 0.0]),
                hem - np.array([half * skirt["flare"], 0.0]),
            ],
        )
        c.over(mask, render_texture(skirt["texture"], shape, c.s), skirt["alpha"])
    torso = c.blank()
    mid = j["hip"] + up * body["torso"] * 0.45
    waist_half = body["waist"] * (body["shoulder_w"] + body["hip_w"]) / 4
    c.polygon(
        torso,
        [
            j["shoulder_l"] - right * body["arm_w"] * 0.4,
            j["shoulder_r"] + right * body["arm_w"] * 0.4,
            mid + right * waist_half,
            j["hip_r"] + right * body["leg_w"] * 0.5,
            j["hip_l"] - right * body["leg_w"] * 0.5,
            mid - right * waist_half,
        ],
    )
    for side in ("l", "r"):
        c.ellipse(torso, j[f"shoulder_{side}"], body["arm_w"] * 0.7, body["arm_w"] * 0.7, 0.0)
    c.over(torso, top)
    skin = c.blank()
    c.capsule(skin, j["neck_base"], j["head"], body["head_w"] * 0.45)
    c.ellipse(skin, j["head"], body["head_w"] / 2, body["head_h"] / 2, j["head_angle"])
    c.over(skin, spec["skin"])
    sleeves, hands = c.blank(), c.blank()
    for side in ("l", "r"):
        c.capsule(sleeves, j[f"shoulder_{side}"], j[f"elbow_{side}"], body["arm_w"])
        forearm = hands if spec["short_sleeves"] else sleeves
        c.capsule(forearm, j[f"elbow_{side}"], j[f"wrist_{side}"], body["arm_w"] * 0.85)
        hand = j[f"wrist_{side}"] + (j[f"wrist_{side}"] - j[f"elbow_{side}"]) * 0.2
        c.ellipse(hands, hand, body["arm_w"] * 0.6, body["arm_w"] * 0.6, 0.0)
    c.over(sleeves, top)
    c.over(hands, spec["skin"])
    if spec.get("sleeves"):  # translucent wide sleeves over the arms
        veil_sleeves = c.blank()
        width = body["arm_w"] * spec["sleeves"]["width"]
        for side in ("l", "r"):
            c.capsule(veil_sleeves, j[f"shoulder_{side}"], j[f"elbow_{side}"], width)
            c.capsule(veil_sleeves, j[f"elbow_{side}"], j[f"wrist_{side}"], width * 1.1)
        c.over(veil_sleeves, top, spec["sleeves"]["alpha"])
    if hair:
        cap = c.blank()
        c.ellipse(cap, j["head"], body["head_w"] * 0.56, body["head_h"] * 0.56, j["head_angle"], 180.0, 360.0)
        c.over(cap, hair["colour"])
        _draw_hair(c, hair, j, body, long_layer=False)
    veil = spec.get("veil")
    if veil:
        mask = c.blank()
        head_top = j["head"] + up * body["head_h"] * 0.6
        side = right * body["head_w"] * 0.65
        low = j["head"] - up * veil["length"]
        c.polygon(
            mask,
            [
                head_top - side,
                head_top + side,
                low + right * veil["width"] / 2,
                low + right * veil["width"] * 0.1 - up * 0.03,
                low - right * veil["width"] / 2,
            ],
        )
        c.over(mask, veil["colour"], veil["alpha"])
    _soften(c, spec)
    alpha = np.clip(c.alpha, 0.0, 1.0)
    rgb = np.where(alpha[..., None] > 1e-4, c.premult / np.maximum(alpha, 1e-4)[..., None], 0.0)
    return FigureRender(np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha, c.px((0.0, 1.0)))


def _soften(c: _Canvas, spec: dict) -> None:
    """Soft edges (Gaussian) and optional motion blur, applied to premultiplied colour and alpha."""
    sigma = max(0.3, spec["edge_sigma"] * c.s / 256.0)
    c.premult = cv2.GaussianBlur(c.premult, (0, 0), sigma)
    c.alpha = cv2.GaussianBlur(c.alpha, (0, 0), sigma)
    blur = spec.get("motion_blur")
    if blur:
        length = max(2.0, blur["length"] * c.s)
        size = int(math.ceil(length)) | 1
        kernel = np.zeros((size, size), np.float32)
        d = _dir(blur["angle"] + 90.0) * (length - 1) / 2
        centre = np.array([size // 2, size // 2])
        p0, p1 = np.round((centre - d) * SCALE).astype(int), np.round((centre + d) * SCALE).astype(int)
        cv2.line(kernel, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1.0, 1, cv2.LINE_AA, SHIFT)
        kernel /= max(kernel.sum(), 1e-6)
        c.premult = cv2.filter2D(c.premult, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        c.alpha = cv2.filter2D(c.alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)
