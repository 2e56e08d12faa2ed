"""Training datasets over the published layouts (I-HIM50K images, V-HIM2K5 videos).

``sample(index, seed)`` returns one training example as tensors:
``image`` [T, 3, H, W] (ImageNet-normalised), ``mask`` [T, N, H, W] guidance made from the
true alpha (N = ``max_inst`` slots, instances in random slots, empty slots zero), ``alpha``
[T, N, H, W] and, for video, ``transition`` [T, N, H, W].  Bad files are reported as one line
naming the file; with ``on_bad_sample: skip`` the sample is replaced by another and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maggie.config.params import ParamsError, fill, section
from maggie.data import augment as T
from maggie.data.layout import DataError, read_gray, read_rgb
from maggie.inference.pipeline import normalise

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainDataConfig:
    """``dataset.train.<stage>`` (params.yaml and its schema document every key)."""

    crop: list[int]
    max_inst: int
    short_size: int
    padding_crop_p: float
    flip_p: float
    gamma_p: float
    add_noise_p: float
    jpeg_p: float
    affine_p: float
    binarized_kernel: int
    downscale_mask_p: float
    simulated_guidance_p: float
    on_bad_sample: str  # skip | error
    quantise_masks: bool = False  # images (the reference: true); videos never are
    motion_p: float = 0.0  # video only
    tracker_guidance_p: float = 0.0  # video only: share of clips guided by a simulated tracker's masks
    clip_length: int = 1  # video only
    max_step_size: int = 1  # video only
    min_instance_pixels: float = 0.001  # fraction of the crop an instance must cover to be kept


class _Base(torch.utils.data.Dataset):
    video = False

    def __init__(self, cfg: TrainDataConfig):
        self.cfg = cfg
        self.skipped = 0
        if cfg.on_bad_sample not in ("skip", "error"):
            raise ParamsError(f"on_bad_sample must be 'skip' or 'error', got {cfg.on_bad_sample!r}")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.sample(index, index)

    def sample(self, index: int, seed: int) -> dict[str, torch.Tensor]:
        """The example for ``index`` drawn with ``seed``; bad or empty samples fall back to others."""
        rng = np.random.default_rng([seed, index])
        for attempt in range(20):
            i = index if attempt == 0 else int(rng.integers(len(self)))
            try:
                image, alphas = self.load(i, rng)
            except DataError as exc:
                if self.cfg.on_bad_sample == "error":
                    raise
                self.skipped += 1
                log.warning("skipping bad sample (%d so far): %s", self.skipped, exc)
                continue
            out = self.augment(image, alphas, rng)
            if out is not None:
                return out
        raise DataError(f"{self.root}: 20 attempts found no usable training sample")

    def augment(self, image: np.ndarray, alphas: np.ndarray, rng) -> dict[str, torch.Tensor] | None:
        cfg = self.cfg
        image, alphas = T.resize_short(image, alphas, cfg.short_size)
        image, alphas = T.random_crop(image, alphas, tuple(cfg.crop), cfg.padding_crop_p, rng)
        if rng.random() < cfg.flip_p:
            image, alphas = image[:, :, ::-1], alphas[..., ::-1]
        if rng.random() < cfg.affine_p:
            image, alphas = T.affine(np.ascontiguousarray(image), np.ascontiguousarray(alphas), rng)
        image = T.photometric(np.ascontiguousarray(image), cfg, rng, self.video)
        alphas = np.ascontiguousarray(alphas, dtype=np.float32)
        alphas[alphas < 5.0 / 255.0] = 0.0
        area = (alphas > 0.5).sum(axis=(0, 2, 3))
        keep = np.nonzero(area > cfg.min_instance_pixels * alphas.shape[-1] * alphas.shape[-2] * alphas.shape[0])[0]
        if len(keep) == 0:
            return None
        if len(keep) > 1 and rng.random() < 0.05:  # the reference drops one instance now and then
            keep = np.delete(keep, int(rng.integers(len(keep))))
        alphas = alphas[:, keep]
        masks = T.guidance_masks(alphas, cfg, rng, self.video)
        if masks.sum() == 0:
            return None
        t, n, h, w = alphas.shape
        slots = rng.choice(cfg.max_inst, n, replace=False)
        full_a = np.zeros((t, cfg.max_inst, h, w), np.float32)
        full_m = np.zeros((t, cfg.max_inst, h, w), np.float32)
        full_a[:, slots], full_m[:, slots] = alphas, masks
        if not self.video and cfg.quantise_masks:
            # Reference: image masks are reduced to OS8 (top-left pixel of each 8x8 block).
            full_m = full_m[..., ::8, ::8].repeat(8, axis=-2).repeat(8, axis=-1)
        img = normalise(torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255.0)
        out = {"image": img, "mask": torch.from_numpy(full_m), "alpha": torch.from_numpy(full_a)}
        if self.video:
            trans = T.transition_maps(alphas, rng)
            out["transition"] = torch.from_numpy(np.repeat(trans[:, None], cfg.max_inst, axis=1))
        return out


class ImageTrainDataset(_Base):
    """``<root>/images/<name>.jpg`` with ``<root>/alphas/<name>/NN.png`` (the I-HIM50K layout)."""

    def __init__(self, root: str | Path, cfg: TrainDataConfig):
        super().__init__(cfg)
        self.root = Path(root)
        img_dir = self.root / "images"
        if not img_dir.is_dir():
            raise DataError(f"{img_dir}: no such folder (expected the I-HIM50K layout)")
        self.images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise DataError(f"{img_dir}: no images")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int, rng) -> tuple[np.ndarray, np.ndarray]:
        path = self.images[i]
        image = read_rgb(path)
        folder = self.root / "alphas" / path.stem
        files = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if not files:
            raise DataError(f"{folder}: no alpha mattes for {path.name}")
        if len(files) > self.cfg.max_inst:
            files = [files[k] for k in sorted(rng.choice(len(files), self.cfg.max_inst, replace=False))]
        alphas = []
        for f in files:
            a = read_gray(f)
            if a.shape != image.shape[:2]:
                raise DataError(f"{f}: alpha is {a.shape[1]}x{a.shape[0]}, the image is "
                                f"{image.shape[1]}x{image.shape[0]}")
            alphas.append(a)
        return image[None], np.stack(alphas)[None].astype(np.float32) / 255.0


class VideoTrainDataset(_Base):
    """``<root>/fgr/<video>/<frame>.jpg`` with ``<root>/pha/<video>/<frame>/NN.png`` (V-HIM2K5).

    An index is a possible clip start; a clip takes ``clip_length`` frames from a window of up
    to ``clip_length * max_step_size`` frames, in order (reversed half the time).
    """

    video = True

    def __init__(self, root: str | Path, cfg: TrainDataConfig):
        super().__init__(cfg)
        self.root = Path(root)
        fgr = self.root / "fgr"
        if not fgr.is_dir():
            raise DataError(f"{fgr}: no such folder (expected the V-HIM2K5 layout)")
        self.videos = {}
        for v in sorted(p for p in fgr.iterdir() if p.is_dir()):
            frames = sorted(p for p in v.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if len(frames) >= 1:
                self.videos[v.name] = frames
        if not self.videos:
            raise DataError(f"{fgr}: no videos")
        self.starts = [
            (v, s) for v, frames in self.videos.items() for s in range(max(1, len(frames) - cfg.clip_length + 1))
        ]

    def __len__(self) -> int:
        return len(self.starts)

    def load(self, i: int, rng) -> tuple[np.ndarray, np.ndarray]:
        video, start = self.starts[i]
        frames = self.videos[video]
        k = self.cfg.clip_length
        end = min(start + k * int(rng.integers(1, self.cfg.max_step_size + 1)), len(frames))
        picks = np.sort(rng.choice(np.arange(start, end), min(k, end - start), replace=False))
        if len(picks) < k:  # short videos: repeat the last frame
            picks = np.concatenate([picks, np.full(k - len(picks), picks[-1])])
        if rng.random() < 0.5:
            picks = picks[::-1]
        images, alphas, names = [], [], None
        for p in picks:
            path = frames[int(p)]
            img = read_rgb(path)
            folder = self.root / "pha" / video / path.stem
            files = sorted(f.name for f in folder.glob("*.png")) if folder.is_dir() else []
            if not files:
                raise DataError(f"{folder}: no alpha mattes for frame {path.name}")
            names = names or files
            frame_alphas = []
            for name in names:
                f = folder / name
                a = read_gray(f) if f.exists() else np.zeros(img.shape[:2], np.uint8)
                if a.shape != img.shape[:2]:
                    raise DataError(f"{f}: alpha size differs from the frame's")
                frame_alphas.append(a)
            images.append(img)
            alphas.append(np.stack(frame_alphas))
        al = np.stack(alphas).astype(np.float32) / 255.0
        if al.shape[1] > self.cfg.max_inst:
            al = al[:, np.sort(rng.choice(al.shape[1], self.cfg.max_inst, replace=False))]
        if al.shape[1] > 1 and rng.random() < 0.2:  # the reference drops one instance from the clip
            al = np.delete(al, int(rng.integers(al.shape[1])), axis=1)
        return np.stack(images), al


def build_train_dataset(params: dict[str, Any], stage: str) -> _Base:
    cfg = fill(TrainDataConfig, section(params, f"dataset.train.{stage}"), f"dataset.train.{stage}")
    root = Path(section(params, "data")["root"])
    if stage == "image":
        return ImageTrainDataset(root / section(params, "data").get("image_train_dir", "I-HIM50K"), cfg)
    return VideoTrainDataset(root / section(params, "data").get("video_train_dir", "V-HIM2K5"), cfg)
