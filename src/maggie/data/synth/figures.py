"""Procedural human-like figures: a JSON-able spec (body, pose, clothes, hair, veil) and its animation.

A spec is everything needed to re-render a figure at any size and time, so a video can animate a figure
from the ``meta.json`` the asset bank stores.  Lengths are fractions of the figure height (head top to
soles).  Angles are degrees in image coordinates: 0 points straight down, positive turns toward +x.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from maggie.data.synth.textures import TEXTURE_KINDS, random_colour, sample_texture

SPEC_VERSION = 1
JOINTS = ("lean", "head", "arm_l", "elbow_l", "arm_r", "elbow_r", "leg_l", "knee_l", "leg_r", "knee_r")

# Generator settings.  "train" is the distribution of the training data; "held_out" deliberately differs
# (child-like proportions, thinner limbs, denser and longer hair, more translucency, vivid colours).
FIGURE_STYLES: dict[str, dict] = {
    "train": {
        "head_ratio": [0.11, 0.14],
        "limb_width": [0.038, 0.055],
        "hair_prob": 0.9,
        "long_hair_prob": 0.5,
        "hair_strands": [120, 300],
        "veil_prob": 0.15,
        "sleeve_prob": 0.35,
        "skirt_prob": 0.3,
        "translucent_alpha": [0.3, 0.7],
        "motion_blur_prob": 0.2,
        "motion_blur": [0.012, 0.035],
        "edge_sigma": [0.5, 1.1],
        "saturation": [0.15, 0.75],
        "textures": ["plain", "stripes", "noise", "gradient"],
    },
    "held_out": {
        "head_ratio": [0.14, 0.18],
        "limb_width": [0.028, 0.04],
        "hair_prob": 1.0,
        "long_hair_prob": 0.8,
        "hair_strands": [280, 520],
        "veil_prob": 0.4,
        "sleeve_prob": 0.6,
        "skirt_prob": 0.5,
        "translucent_alpha": [0.2, 0.6],
        "motion_blur_prob": 0.45,
        "motion_blur": [0.02, 0.05],
        "edge_sigma": [0.8, 1.6],
        "saturation": [0.7, 1.0],
        "textures": ["checker", "dots", "stripes"],
    },
}

SKIN_TONES = (
    (0.96, 0.80, 0.69),
    (0.87, 0.67, 0.53),
    (0.76, 0.57, 0.42),
    (0.55, 0.38, 0.26),
    (0.36, 0.24, 0.16),
    (0.98, 0.87, 0.78),
)
HAIR_COLOURS = (
    (0.08, 0.06, 0.05),
    (0.30, 0.18, 0.10),
    (0.55, 0.36, 0.18),
    (0.85, 0.72, 0.45),
    (0.60, 0.25, 0.10),
    (0.65, 0.65, 0.65),
)

# Pose presets: ranges of arm/leg abduction (away from the body), elbow/knee bend.
POSES = {
    "standing": {"arm": [5, 25], "elbow": [0, 25], "leg": [2, 10], "knee": [0, 8]},
    "walking": {"arm": [-5, 30], "elbow": [0, 40], "leg": [5, 22], "knee": [0, 35]},
    "arms_up": {"arm": [110, 170], "elbow": [-40, 40], "leg": [3, 14], "knee": [0, 10]},
    "wide": {"arm": [55, 100], "elbow": [-30, 30], "leg": [10, 25], "knee": [0, 15]},
    "hands_on_hips": {"arm": [30, 50], "elbow": [-110, -70], "leg": [4, 14], "knee": [0, 8]},
}


def style_settings(style: str, overrides: dict | None = None) -> dict:
    """The generator settings of ``style`` with ``overrides`` (from params.yaml) applied key by key."""
    if style not in FIGURE_STYLES:
        raise ValueError(f"figure style {style!r} unknown; expected one of {sorted(FIGURE_STYLES)}")
    settings = copy.deepcopy(FIGURE_STYLES[style])
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ValueError(f"figure style {style!r}: unknown setting {key!r}")
        settings[key] = value
    return settings


def _u(rng: np.random.Generator, bounds) -> float:
    return float(rng.uniform(float(bounds[0]), float(bounds[1])))


def _jitter_colour(rng: np.random.Generator, base, amount: float = 0.06) -> list[float]:
    return [round(float(np.clip(c + rng.uniform(-amount, amount), 0.0, 1.0)), 4) for c in base]


def _sample_pose(rng: np.random.Generator) -> dict:
    preset = POSES[str(rng.choice(list(POSES)))]
    abd_l, abd_r = _u(rng, preset["arm"]), _u(rng, preset["arm"])
    if rng.random() < 0.3:  # one arm differs (waving, pointing)
        abd_r = _u(rng, POSES[str(rng.choice(list(POSES)))]["arm"])
    bend_l, bend_r = _u(rng, preset["elbow"]), _u(rng, preset["elbow"])
    return {
        "lean": _u(rng, (-8, 8)),
        "head": _u(rng, (-12, 12)),
        "arm_l": -abd_l,
        "elbow_l": -bend_l,
        "arm_r": abd_r,
        "elbow_r": bend_r,
        "leg_l": -_u(rng, preset["leg"]),
        "knee_l": _u(rng, preset["knee"]),
        "leg_r": _u(rng, preset["leg"]),
        "knee_r": -_u(rng, preset["knee"]),
    }


def _sample_motion(rng: np.random.Generator) -> dict:
    """A gait-like periodic motion: legs in antiphase, arms against the legs, small sway of trunk/head."""
    phase = _u(rng, (0, 2 * math.pi))
    leg_amp, arm_amp = _u(rng, (6, 22)), _u(rng, (8, 30))
    return {
        "freq": _u(rng, (0.3, 1.1)),
        "joints": {
            "lean": [_u(rng, (0, 4)), phase * 0.5],
            "head": [_u(rng, (0, 8)), phase + 1.0],
            "arm_l": [arm_amp, phase + math.pi],
            "arm_r": [arm_amp, phase],
            "elbow_l": [_u(rng, (0, 15)), phase],
            "elbow_r": [_u(rng, (0, 15)), phase + math.pi],
            "leg_l": [leg_amp, phase],
            "leg_r": [leg_amp, phase + math.pi],
            "knee_l": [_u(rng, (0, 15)), phase + 0.5],
            "knee_r": [_u(rng, (0, 15)), phase + 0.5 + math.pi],
        },
    }


def sample_figure_spec(rng: np.random.Generator, style: str = "train", overrides: dict | None = None) -> dict:
    """Draw one figure spec (JSON-able) from the generator settings of ``style``."""
    s = style_settings(style, overrides)
    head_h = _u(rng, s["head_ratio"])
    limb = _u(rng, s["limb_width"])
    torso = _u(rng, (0.27, 0.32))
    neck = _u(rng, (0.025, 0.04))
    leg_total = 1.0 - head_h - neck - torso - 0.015
    body = {
        "head_h": head_h,
        "head_w": head_h * _u(rng, (0.7, 0.85)),
        "neck": neck,
        "torso": torso,
        "shoulder_w": _u(rng, (0.19, 0.26)),
        "hip_w": _u(rng, (0.13, 0.19)),
        "waist": _u(rng, (0.8, 1.0)),
        "upper_arm": _u(rng, (0.15, 0.18)),
        "forearm": _u(rng, (0.13, 0.16)),
        "arm_w": limb,
        "leg_w": limb * _u(rng, (1.2, 1.6)),
        "thigh": leg_total * 0.52,
        "shin": leg_total * 0.48,
    }
    sat = tuple(s["saturation"])
    kinds = [k for k in s["textures"] if k in TEXTURE_KINDS]
    hair = None
    if rng.random() < s["hair_prob"]:
        long_hair = bool(rng.random() < s["long_hair_prob"])
        if sat[0] > 0.5 and rng.random() < 0.5:
            hair_colour = random_colour(rng, sat)
        else:
            hair_colour = _jitter_colour(rng, HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))])
        hair = {
            "long": long_hair,
            "colour": hair_colour,
            "strands": int(rng.integers(int(s["hair_strands"][0]), int(s["hair_strands"][1]) + 1)),
            "length": _u(rng, (0.18, 0.42)) if long_hair else _u(rng, (0.03, 0.07)),
            "spread": _u(rng, (70, 110)),
            "curl": _u(rng, (0.0, 0.6)),
            "gravity": _u(rng, (0.15, 0.5)),
            "opacity": [0.35, 0.95],
            "seed": int(rng.integers(0, 2**31 - 1)),
        }
    translucent = s["translucent_alpha"]
    veil = None
    if rng.random() < s["veil_prob"]:
        veil = {
            "alpha": _u(rng, translucent),
            "length": _u(rng, (0.25, 0.5)),
            "width": _u(rng, (0.25, 0.4)),
            "colour": random_colour(rng, sat, (0.6, 1.0)),
        }
    sleeves = None
    if rng.random() < s["sleeve_prob"]:
        sleeves = {"alpha": _u(rng, translucent), "width": _u(rng, (1.8, 2.8))}
    skirt = None
    if rng.random() < s["skirt_prob"]:
        skirt = {
            "length": _u(rng, (0.15, 0.35)),
            "flare": _u(rng, (1.2, 2.0)),
            "alpha": 1.0 if rng.random() < 0.6 else _u(rng, translucent),
            "texture": sample_texture(rng, kinds, sat),
        }
    blur = None
    if rng.random() < s["motion_blur_prob"]:
        blur = {"length": _u(rng, s["motion_blur"]), "angle": _u(rng, (0, 180))}
    return {
        "version": SPEC_VERSION,
        "style": style,
        "body": {k: round(v, 5) for k, v in body.items()},
        "pose": {k: round(v, 3) for k, v in _sample_pose(rng).items()},
        "motion": _sample_motion(rng),
        "skin": _jitter_colour(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 0.04),
        "top": sample_texture(rng, kinds, sat),
        "bottom": sample_texture(rng, kinds, sat),
        "shoes": random_colour(rng, (0.0, 0.5), (0.05, 0.5)),
        "short_sleeves": bool(rng.random() < 0.4),
        "hair": hair,
        "veil": veil,
        "sleeves": sleeves,
        "skirt": skirt,
        "motion_blur": blur,
        "edge_sigma": _u(rng, s["edge_sigma"]),
    }


def pose_at(spec: dict, t: float) -> dict:
    """Joint angles at time ``t`` (seconds): the rest pose plus smooth sinusoidal motion."""
    pose = dict(spec["pose"])
    motion = spec.get("motion")
    if not motion or t == 0.0:
        return pose
    omega = 2.0 * math.pi * float(motion["freq"])
    for joint, (amp, phase) in motion["joints"].items():
        pose[joint] = pose[joint] + amp * (math.sin(omega * t + phase) - math.sin(phase))
    return pose
