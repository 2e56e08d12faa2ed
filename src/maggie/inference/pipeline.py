"""Inference around the network: normalise, resize to a short side, pad, run, and undo.

Shared by the evaluation stages, the training validation and the user-facing predictor,
so that every path treats images the way the reference's test loader does: resize so the
short side is ``short_size`` (bilinear for images, nearest for masks), pad bottom/right to a
multiple of ``pad_to``, and map the mattes back with a bilinear resize (align_corners=True),
zeroing values <= 1/255 and saturating values >= 254/255.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from maggie.models.ops.sum_rule import limit_sum as limit_sum_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """How an input of size (h0, w0) was resized to (h, w) and padded to (hp, wp)."""

    h0: int
    w0: int
    h: int
    w: int
    hp: int
    wp: int


def plan_geometry(h0: int, w0: int, short_size: int, pad_to: int = 32) -> Geometry:
    scale = short_size / min(h0, w0)
    h, w = max(1, int(h0 * scale)), max(1, int(w0 * scale))
    hp, wp = -(-h // pad_to) * pad_to, -(-w // pad_to) * pad_to
    return Geometry(h0, w0, h, w, hp, wp)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8-range or [0, 1] RGB ``[..., 3, H, W]`` -> ImageNet-normalised float."""
    x = images.float()
    if x.max() > 1.5:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def denormalise(image: torch.Tensor) -> np.ndarray:
    """Normalised ``[3, H, W]`` tensor -> uint8 RGB ``[H, W, 3]``."""
    x = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    x = x * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return np.clip(x * 255.0, 0, 255).astype(np.uint8)


def prepare(images: np.ndarray, masks: np.ndarray, geom: Geometry, quantise_masks: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """images ``[T, H0, W0, 3]`` uint8, masks ``[T, N, H0, W0]`` {0,1} -> network inputs ``[1, T, ...]``.

    ``quantise_masks`` reproduces the reference benchmark protocol: masks are reduced to
    OS8 by taking the top-left pixel of every 8x8 block (the model upsamples them back).
    """
    img = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=(geom.h, geom.w), mode="bilinear", align_corners=False)
    img = normalise(img / 255.0)
    img = F.pad(img, (0, geom.wp - geom.w, 0, geom.hp - geom.h))
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()
    m = F.interpolate(m, size=(geom.h, geom.w), mode="nearest")
    m = F.pad(m, (0, geom.wp - geom.w, 0, geom.hp - geom.h))
    if quantise_masks:
        m = m[..., ::8, ::8]
    return img[None], (m > 0.5).float()[None]


def restore(alpha: torch.Tensor, geom: Geometry) -> np.ndarray:
    """``[..., Hp, Wp]`` network mattes -> ``[..., H0, W0]`` float32 numpy at the input's size."""
    lead = alpha.shape[:-2]
    a = alpha[..., : geom.h, : geom.w].reshape(-1, 1, geom.h, geom.w).float()
    a = F.interpolate(a, size=(geom.h0, geom.w0), mode="bilinear", align_corners=True)
    a = a.reshape(*lead, geom.h0, geom.w0)
    a = torch.where(a <= 1.0 / 255.0, torch.zeros_like(a), a)
    a = torch.where(a >= 254.0 / 255.0, torch.ones_like(a), a)
    return a.clamp(0, 1).cpu().numpy()


def distinct_masks(masks: np.ndarray) -> tuple[list[int], list[int]]:
    """For ``[T, N, H, W]`` guidance: the instances to run (first of each set of identical, non-empty
    masks) and, per instance, the position of its representative among them."""
    n = masks.shape[1]
    flat = masks.reshape(masks.shape[0], n, -1) > 0
    keep: list[int] = []
    rep: list[int] = []
    for i in range(n):
        same = next((k for k, j in enumerate(keep) if flat[:, i].any() and np.array_equal(flat[:, i], flat[:, j])),
                    None)
        if same is None:
            keep.append(i)
            same = len(keep) - 1
        rep.append(same)
    return keep, rep


SumRule = bool | str  # False | True (scale evenly) | "guided" (the unguided give way first)


def limit_sum(alpha: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """Mattes ``[..., N, H, W]`` reduced where the people's mattes add up to more than 1.

    The true mattes of people in one image add up to at most 1 (each pixel's opacity is shared among
    them; measured on the training composites: largest sum 1.0000001); a network that gives two
    overlapping people both near 1 is wrong on one of them.  Without ``masks`` every matte at such a
    pixel is scaled by the same factor.  With the guidance ``masks`` (same shape), the people whose mask
    does not cover the pixel give way first: their mattes are scaled into what the guided people leave
    (if anything), and the guided ones are scaled only if they alone exceed 1.  A network that spreads a
    person onto the person in front (occlusion) then loses that spill instead of halving the front person.
    A post-process outside the network: the reference has none (``test.sum_to_one``, off in the paper preset).
    """
    out = limit_sum_tensor(torch.from_numpy(np.ascontiguousarray(alpha)),
                           None if masks is None else torch.from_numpy(np.ascontiguousarray(masks)))
    return out.numpy().astype(alpha.dtype, copy=False)


def apply_sum_rule(alpha: np.ndarray, masks: np.ndarray, rule: SumRule) -> np.ndarray:
    """``test.sum_to_one``: False leaves the mattes, True scales evenly, ``"guided"``: see ``limit_sum``."""
    if rule not in (False, True, "guided"):
        raise ValueError(f"sum_to_one must be false, true or 'guided', got {rule!r}")
    if rule is False:
        return alpha
    return limit_sum(alpha, masks if rule == "guided" else None)


@torch.no_grad()
def predict_frames(model, images: np.ndarray, masks: np.ndarray, short_size: int, device: torch.device,
                   quantise_masks: bool = False, pad_to: int = 32, merge_duplicates: bool = False,
                   sum_to_one: SumRule = False, first_alpha: np.ndarray | None = None) -> np.ndarray:
    """Mattes ``[T, N, H0, W0]`` for one image (T=1) or one clip processed as a whole.

    ``first_alpha`` ``[N, H0, W0]``: for the methods guided by one frame (FTP-VM, OTVM), the true alpha of
    frame 0 that their evaluation protocol makes the first trimap from (resized and padded like the image).

    ``merge_duplicates``: people given identical masks (a segmenter that merged them) cannot be told
    apart by any network; each such set is run as one instance and every member gets its matte, instead
    of several slots competing for the same pixels (measured: in_dist sim09 MAD 11115 -> 9423 with the
    same weights).  Off in the reference protocol.  ``sum_to_one``: ``apply_sum_rule`` on every person's matte.
    """
    keep, rep = distinct_masks(masks) if merge_duplicates else (list(range(masks.shape[1])), None)
    geom = plan_geometry(images.shape[1], images.shape[2], short_size, pad_to)
    img, m = prepare(images, masks[:, keep], geom, quantise_masks)
    extra = {}
    if first_alpha is not None:
        fa = F.interpolate(torch.from_numpy(np.ascontiguousarray(first_alpha[keep], np.float32))[None],
                           size=(geom.h, geom.w), mode="bilinear", align_corners=False)
        extra["first_alpha"] = F.pad(fa, (0, geom.wp - geom.w, 0, geom.hp - geom.h)).to(device)
    out = model(img.to(device), m.to(device), **extra)
    alpha = restore(out["alpha"][0], geom)
    alpha = alpha if rep is None else alpha[:, rep]
    # After the duplicates get their copies: people who share one mask share its matte (held_out 0.701 -> 0.688
    # of the mask's MAD, against 0.705 without the limit; applied before the copies it was 0.701).
    return apply_sum_rule(alpha, masks, sum_to_one)


def meeting_band(masks: np.ndarray, radius: int) -> np.ndarray:
    """``[H, W]`` float 1 where the guidance masks ``[N, H, W]`` of two people, each grown by ``radius`` px,
    overlap: where one person meets another."""
    if masks.shape[0] < 2:
        return np.zeros(masks.shape[1:], np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = sum(cv2.dilate((m > 0).astype(np.uint8), kernel).astype(np.int32) for m in masks)
    return (grown >= 2).astype(np.float32)


def predict_video(model, frames: Iterator[tuple[np.ndarray, np.ndarray]], short_size: int, device: torch.device,
                  clip_length: int = 3, pad_to: int = 32, sum_to_one: SumRule = False,
                  meeting_short_size: int | None = None, meeting_radius: int = 4) -> Iterator[np.ndarray]:
    """Stream final mattes ``[N, H0, W0]`` frame by frame, as the reference's test loop does.

    Clips of ``clip_length`` frames slide by one; each frame's final matte is the fused middle
    of the clip centred on it, with the previous final frame carried into the fusion.  Memory
    stays bounded by the clip, whatever the video length.  ``sum_to_one``: ``apply_sum_rule`` on each
    output with its frame's masks (the mattes carried into the next fusion stay the network's own).

    ``meeting_short_size`` (not in the reference): the video also runs at this short side, and where two
    people's masks (grown by ``meeting_radius`` px) meet, each frame's matte is the mean of the two runs.
    The edge where one person passes in front of another must be placed to a pixel or two, finer than the
    network's 8-px tokens resolve at a small size (``test.video.meeting_short_size``, benchmarks/README.md).
    """
    if sum_to_one is False and not meeting_short_size:
        return _fused_mattes(model, frames, short_size, device, clip_length, pad_to)
    pending: deque[np.ndarray] = deque()  # the masks of frames read but not yet emitted

    def remember(pairs):
        for frame, mask in pairs:
            pending.append(mask)
            yield frame, mask

    if not meeting_short_size:
        stream = _fused_mattes(model, remember(frames), short_size, device, clip_length, pad_to)
        return (apply_sum_rule(a, pending.popleft(), sum_to_one) for a in stream)
    base_in, fine_in = itertools.tee(remember(frames))  # the two runs stay in step: a clip's worth is buffered
    base = _fused_mattes(model, base_in, short_size, device, clip_length, pad_to)
    fine = _fused_mattes(model, fine_in, meeting_short_size, device, clip_length, pad_to)

    def blended():
        for a, b in zip(base, fine, strict=True):
            masks = pending.popleft()
            band = meeting_band(masks, meeting_radius)
            yield apply_sum_rule(a + (b - a) * (band / 2), masks, sum_to_one)
    return blended()


@torch.no_grad()
def _fused_mattes(model, frames: Iterator[tuple[np.ndarray, np.ndarray]], short_size: int, device: torch.device,
                  clip_length: int, pad_to: int) -> Iterator[np.ndarray]:
    window: list[tuple[np.ndarray, np.ndarray]] = []
    prev: torch.Tensor | None = None
    geom = None
    emitted = 0
    for frame, mask in frames:
        window.append((frame, mask))
        if len(window) < clip_length:
            continue
        geom = geom or plan_geometry(frame.shape[0], frame.shape[1], short_size, pad_to)
        imgs = np.stack([f for f, _ in window])
        msks = np.stack([m for _, m in window])
        img, m = prepare(imgs, msks, geom)
        out = model(img.to(device), m.to(device), prev_alpha=prev)
        alpha = out["alpha"][0]  # [T, N, Hp, Wp]
        mid = clip_length // 2
        if emitted == 0:
            for i in range(mid):
                yield restore(alpha[i], geom)
                emitted += 1
        yield restore(alpha[mid], geom)
        emitted += 1
        prev = alpha[mid][None]
        window.pop(0)
    if geom is None:
        # Shorter than one clip: process what there is as a single clip.
        if window:
            geom = plan_geometry(window[0][0].shape[0], window[0][0].shape[1], short_size, pad_to)
            img, m = prepare(np.stack([f for f, _ in window]), np.stack([k for _, k in window]), geom)
            alpha = model(img.to(device), m.to(device))["alpha"][0]
            for i in range(alpha.shape[0]):
                yield restore(alpha[i], geom)
        return
    # The tail: the last clip's frames after its middle are final as fused.
    for i in range(clip_length // 2 + 1, clip_length):
        yield restore(alpha[i], geom)
