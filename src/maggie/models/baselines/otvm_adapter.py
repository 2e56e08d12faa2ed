"""OTVM as a baseline of this project: the project's inputs in, one OTVM pass per instance.

OTVM matte one object per run from one trimap of the first frame.  Here every (batch item,
instance slot) whose mask is non-empty in frame 0 is one run; other slots come back as zeros.

* Eval (``forward``): the frame-0 trimap comes from ``first_alpha`` with the authors'
  ``trimap_from_alpha`` (the MaGGIe paper's protocol gave OTVM the first-frame trimap) or, without
  it, from the frame-0 mask (``trimap_from_mask``), the band radius scaled from the authors'
  1080p presets to the frame's short side; then the authors' clip loop (``forward_clip``).
* Training (``forward`` in train mode): the authors' stage-4 forward on the folded instance
  clips, their random ground-truth trimaps built from the true alphas (``state.gt_alpha`` as the
  engine passes it, or ``gt_alpha``); :func:`otvm_objective` is the authors' loss on the result.
* Streaming (``start`` / ``step``): frame by frame with the authors' memory schedule per
  instance, for videos too long for one clip tensor; equal to ``forward_clip``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from maggie.models.baselines.otvm import OTVM, Memory, trimap_from_alpha, trimap_from_mask
from maggie.models.baselines.otvm_backbones import IMAGENET_MEAN, IMAGENET_STD
from maggie.models.baselines.otvm_loss import otvm_loss, training_trimaps
from maggie.models.maggie.network import check_inputs

OTVM_ARCHS = ("otvm",)


@dataclass
class OTVMConfig:
    arch: str = "otvm"
    stage: int = 4
    trimap_radius: int = 12  # the authors' 'medium' band (narrow 5, wide 20) ...
    radius_ref: int = 1080  # ... on frames of this short side (VideoMatting108)
    memory_skip: int = 10  # cfg.TEST.MEMORY_SKIP_FRAME
    memory_max: int = 5  # cfg.TEST.MEMORY_MAX_NUM
    train_crop_ref: int | None = 320  # the training trimap radii are drawn for crops of this size

    def to_dict(self) -> dict:
        return asdict(self)


def unnormalize(image: Tensor) -> Tensor:
    """ImageNet-normalised RGB ``[..., 3, H, W]`` back to 0..1 (clamped), the authors' input range."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


@dataclass
class OTVMStream:
    """Streaming state of one video: per tracked slot the trimap network's memory."""

    index: int  # index of the last frame processed
    alpha: Tensor  # [N, H, W] alpha of that frame (zeros for untracked slots)
    slots: list[int]  # tracked instance slots
    memories: list[Memory | None] = field(default_factory=list)
    skip: int = 10
    max_num: int = 5


class OTVMBaseline(OTVM):
    """The authors' network (their state-dict keys, so ``s4_OTVM.pth`` loads strictly) with the project's inputs."""

    archs = OTVM_ARCHS
    is_video = True
    first_frame_guided = True  # guided by frame 0 only; evaluation may give that frame's true alpha

    def __init__(self, cfg: OTVMConfig | None = None):
        cfg = cfg or OTVMConfig()
        if cfg.arch not in self.archs:
            raise ValueError(f"unknown OTVM arch {cfg.arch!r}; expected one of {self.archs}")
        super().__init__(cfg.stage)
        self.cfg = cfg

    # -- helpers ---------------------------------------------------------------------------------

    def eval_radius(self, h: int, w: int) -> int:
        """The trimap band radius for a frame: the authors' preset scaled to its short side (>= 1)."""
        return max(1, int(round(self.cfg.trimap_radius * min(h, w) / self.cfg.radius_ref)))

    def first_trimaps(self, mask0: Tensor, first_alpha: Tensor | None = None) -> Tensor:
        """Frame-0 trimaps ``[N, H, W]`` in {0, 0.5, 1} from masks ``[N, H, W]`` or, when given, alphas."""
        r = self.eval_radius(*mask0.shape[-2:])
        if first_alpha is not None:
            return trimap_from_alpha(first_alpha[:, None], r)[:, 0]
        return trimap_from_mask(mask0[:, None], r)[:, 0]

    @staticmethod
    def instances(mask: Tensor) -> Tensor:
        """``[M, 2]`` (b, n) of the slots whose mask ``[B, T, N, H, W]`` is non-empty in frame 0, row-major."""
        return (mask[:, 0].flatten(2) > 0.5).any(2).nonzero()

    # -- clips -----------------------------------------------------------------------------------

    def forward(self, image: Tensor, mask: Tensor, first_alpha: Tensor | None = None, prev_alpha=None,
                state=None, gt_alpha: Tensor | None = None) -> dict[str, Tensor]:
        """image ``[B, T, 3, H, W]`` (ImageNet-normalised), mask ``[B, T, N, H, W]`` -> ``{"alpha": [B, T, N, H, W]}``.

        Eval: first_alpha ``[B, N, H, W]`` (optional) gives the frame-0 trimaps, else the frame-0 masks.
        Training: needs the true alphas, ``gt_alpha`` ``[B, T, N, H, W]`` or ``state.gt_alpha``
        ``[B*T, N, H, W]`` (the engine's ``DecoderState``); also returns the folded per-instance
        clips (row m is instance ``index[m, 1]`` of batch item ``index[m, 0]``): the forward's
        ``fba``, ``fba_refined``, ``alpha``, ``prop_logits``, ``trimap_logits`` ``[M, T, ...]``,
        the frames ``image`` (0..1), and the targets ``gt_alpha`` (eps-snapped) / ``gt_trimap``."""
        mask = check_inputs(image, mask)
        b, t, n, h, w = mask.shape
        rgb = unnormalize(image)
        index = self.instances(mask)
        if not self.training:
            alphas = image.new_zeros(b, t, n, h, w)
            for bi, ni in index.tolist():
                fa = None if first_alpha is None else first_alpha[bi, ni : ni + 1]
                tri = self.first_trimaps(mask[bi, 0, ni : ni + 1], fa)
                a, _ = self.forward_clip(rgb[bi], tri, self.cfg.memory_skip, self.cfg.memory_max)
                alphas[bi, :, ni] = a[:, 0]
            return {"alpha": alphas}
        if gt_alpha is None and state is not None and getattr(state, "gt_alpha", None) is not None:
            gt_alpha = state.gt_alpha.reshape(b, t, n, h, w)
        if gt_alpha is None:
            raise ValueError("OTVM training needs the true alphas (gt_alpha or state.gt_alpha)")
        if len(index) == 0:
            raise ValueError("OTVM training needs an instance present in frame 0")
        bi, ni = index[:, 0], index[:, 1]
        rng = random.Random(int(torch.randint(0, 2**31 - 1, ())))  # follows torch's seed
        gt_tri, gt = training_trimaps(gt_alpha[bi, :, ni].unsqueeze(2), rng, self.cfg.train_crop_ref)
        frames = rgb[bi]
        out = self.forward_train(frames, gt_tri[:, 0].to(frames))
        alphas = image.new_zeros(b, t, n, h, w)
        alphas[bi, :, ni] = out["alpha"][:, :, 0].to(alphas.dtype)
        return {**out, "alpha": alphas, "alpha_folded": out["alpha"], "index": index, "image": frames,
                "gt_alpha": gt.to(frames), "gt_trimap": gt_tri.to(frames)}

    # -- streaming -------------------------------------------------------------------------------

    def _advance(self, frame: Tensor, st: OTVMStream, trimaps: Tensor | None) -> OTVMStream:
        rgb = unnormalize(frame)[None]
        alpha = frame.new_zeros(len(st.alpha), *frame.shape[-2:])
        for k, slot in enumerate(st.slots):
            tri = None if trimaps is None else (trimaps[slot : slot + 1] if trimaps.dim() == 3 else trimaps[slot])
            a, _, st.memories[k] = self.stream_step(rgb, st.index, st.memories[k], tri, st.skip, st.max_num)
            alpha[slot] = a[0, 0]
        st.alpha = alpha
        return st

    @torch.no_grad()
    def start(self, frame0: Tensor, trimap0: Tensor) -> OTVMStream:
        """Begin a video: frame0 ``[3, H, W]`` (ImageNet-normalised), trimap0 ``[N, H, W]`` in {0, 0.5, 1}
        (see :meth:`first_trimaps`) or ``[N, 3, H, W]`` one-hot; slots whose trimap is all background are
        not tracked.  The returned state holds frame 0's alpha ``[N, H, W]`` in ``state.alpha``."""
        fg_or_unknown = trimap0[:, 1:].flatten(1) if trimap0.dim() == 4 else trimap0.flatten(1)
        slots = (fg_or_unknown > 0).any(1).nonzero().flatten().tolist()
        skip, max_num = OTVM.memory_schedule(*frame0.shape[-2:], self.cfg.memory_skip, self.cfg.memory_max)
        st = OTVMStream(0, frame0.new_zeros(len(trimap0), *frame0.shape[-2:]), slots, [None] * len(slots),
                        skip, max_num)
        return self._advance(frame0, st, trimap0)

    @torch.no_grad()
    def step(self, frame: Tensor, state: OTVMStream) -> tuple[Tensor, OTVMStream]:
        """Next frame ``[3, H, W]`` (ImageNet-normalised) -> (alpha ``[N, H, W]``, state)."""
        state.index += 1
        state = self._advance(frame, state, None)
        return state.alpha, state


def otvm_objective(out: dict[str, Tensor], batch: dict[str, Tensor] | None = None, w=None) -> dict[str, Tensor]:
    """The authors' stage-4 loss on :class:`OTVMBaseline`'s training outputs (weights are theirs,
    ``w`` is ignored).  The project's batches have no foreground / background layers, so the F/B
    terms are skipped unless ``batch`` carries them folded like the outputs (``otvm_fg`` /
    ``otvm_bg`` ``[M, T, 3, H, W]`` in 0..1, with ``image`` their composite)."""
    fg = bg = None
    if batch is not None and "otvm_fg" in batch and "otvm_bg" in batch:
        fg, bg = batch["otvm_fg"], batch["otvm_bg"]
    return otvm_loss(out, out["gt_alpha"], out["gt_trimap"], out["image"], fg, bg)
