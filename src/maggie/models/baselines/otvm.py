"""OTVM (One-Trimap Video Matting, Seong et al., ECCV 2022) in plain PyTorch.

A port of the authors' network (github.com/Hongje/OTVM): an STM trimap propagation network
(``trimap.model``, :mod:`otvm_trimap`) and an FBA-Matting alpha network with OTVM's refinement
head (``NET``, :mod:`otvm_alpha`).  The module tree keeps the authors' attribute names, so their
stage-3/4 checkpoints (``s3_OTVM.pth``, ``s4_OTVM.pth``: one flat state dict, no ``module.``
prefix) load with ``strict=True``.  No torchvision, no OpenCV.

* :meth:`OTVM.forward_clip`: the authors' evaluation loop (``eval.py`` + ``EvalModel``), one
  object, one trimap for frame 0, the memory schedule of their ``cfg.TEST``.
* :meth:`OTVM.forward_train`: their training forward (``FullModel.forward``, stage 4); the losses
  are in :mod:`otvm_loss`.
* ``OTVM.train()`` keeps every BatchNorm (all in STM's encoders) in eval mode, as their
  ``train.py`` does (``FREEZE_BN``).

Typical use::

    net = OTVM().eval()
    net.load_state_dict(load_authors_state_dict("s4_OTVM.pth"))
    tri = trimap_from_mask(mask0, radius=12)          # [1, H, W] in {0, 0.5, 1}
    alphas, trimaps = net.forward_clip(frames, tri)   # frames [T, 3, H, W] RGB in 0..1
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from maggie.models.baselines.otvm_alpha import MattingModule, trimap_features
from maggie.models.baselines.otvm_backbones import IMAGENET_MEAN, IMAGENET_STD
from maggie.models.baselines.otvm_trimap import ConstantBuffers, TrimapNet

__all__ = [
    "OTVM",
    "Memory",
    "load_authors_state_dict",
    "pad_to_multiple",
    "trimap_from_alpha",
    "trimap_from_mask",
    "trimap_to_onehot",
    "unpad",
]

Memory = tuple[Tensor, Tensor]  # keys [B, 128, T, h, w], values [B, 512, T, h, w]


def trimap_to_onehot(trimap: Tensor) -> Tensor:
    """Turn a trimap ``[..., 1, H, W]`` (0 = bg, 1 = fg, anything else unknown) into the authors'
    3-channel one-hot ``[..., 3, H, W]`` ordered (background, unknown, foreground).

    A 3-channel input is returned as float unchanged: it is taken to be in that order already."""
    if trimap.shape[-3] == 3:
        return trimap.float()
    t = trimap.float()
    bg = (t == 0).float()
    fg = (t == 1).float()
    return torch.cat([bg, 1.0 - bg - fg, fg], dim=-3)


def trimap_from_mask(mask: Tensor, radius: int) -> Tensor:
    """First-frame trimap from a binary mask ``[..., 1, H, W]``: an unknown band of ``2*radius+1``
    pixels centred on the mask boundary (square dilation minus square erosion, the same square
    max-pool structuring element the authors use), foreground inside, background outside.

    The authors' eval presets are radius 5/12/20 ('narrow'/'medium'/'wide', band 11/25/41 px) on
    VideoMatting108's ~1080p frames; scale the radius with the frame size.  Returns values in
    {0, 0.5, 1} with the input's leading shape (0.5 = unknown)."""
    m = (mask > 0.5).float()
    lead = m.shape[:-2]
    m4 = m.reshape(-1, 1, *m.shape[-2:])
    k = 2 * radius + 1
    dil = F.max_pool2d(m4, k, stride=1, padding=radius)
    ero = -F.max_pool2d(-m4, k, stride=1, padding=radius)
    band = (dil - ero) > 0.5
    tri = torch.where(band, torch.full_like(m4, 0.5), m4)
    return tri.reshape(*lead, *m.shape[-2:])


def trimap_from_alpha(alpha: Tensor, radius: int, eps: float = 0.0) -> Tensor:
    """The authors' evaluation trimap from a ground-truth alpha ``[..., 1, H, W]`` in 0..1
    (``EvalModel.make_trimap_gt``): unknown = the fractional pixels (0 < alpha < 1) dilated by a
    square of side ``2*radius+1``; elsewhere fg where alpha == 1, bg where alpha == 0.  Returns
    values in {0, 0.5, 1}."""
    a = alpha.float()
    a = torch.where(a < eps, torch.zeros_like(a), a)
    a = torch.where(a > 1 - eps, torch.ones_like(a), a)
    lead = a.shape[:-2]
    a4 = a.reshape(-1, 1, *a.shape[-2:])
    frac = ((a4 > 0) & (a4 < 1)).float()
    band = F.max_pool2d(frac, 2 * radius + 1, stride=1, padding=radius) > 0.5
    cls = torch.where(band, torch.ones_like(a4), 2 * a4).long()  # 0 bg, 1 unknown, 2 fg
    return (cls.float() * 0.5).reshape(*lead, *a.shape[-2:])


def pad_to_multiple(x: Tensor, d: int, value: float = 0.0) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Centred constant padding of the last two dims up to multiples of ``d``; returns the pad as
    (left, right, top, bottom), the split the authors' ``pad_divide_by`` uses (extra pixel last)."""
    h, w = x.shape[-2:]
    nh = h if h % d == 0 else h + d - h % d
    nw = w if w % d == 0 else w + d - w % d
    pad = ((nw - w) // 2, (nw - w) - (nw - w) // 2, (nh - h) // 2, (nh - h) - (nh - h) // 2)
    if sum(pad) == 0:
        return x, pad
    return F.pad(x, pad, value=value), pad


def unpad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on the last two dims."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


class OTVM(nn.Module):
    """OTVM with the authors' state-dict layout (alpha ``FullModel`` / ``EvalModel`` with the trimap
    ``FullModel`` / ``FullModel_eval`` inside): evaluation loop, streaming steps and training forward.

    ``stage`` follows the authors' training stages: 3 and 4 (the released ``s3_OTVM``/``s4_OTVM``)
    have the refinement head and feed [trimap, alpha, hidden] to the trimap memory (hdim 16);
    stage 2 has neither; stage 1 has no trimap network (the given trimap is used for every frame).
    """

    def __init__(self, stage: int = 4) -> None:
        super().__init__()
        self.stage = stage
        self.refinement = stage > 2
        self.hdim = 16 if stage > 2 else -1
        self.register_buffer("IMG_MEAN", torch.tensor(IMAGENET_MEAN).reshape(1, 1, 3, 1, 1))
        self.register_buffer("IMG_STD", torch.tensor(IMAGENET_STD).reshape(1, 1, 3, 1, 1))
        self.NET = MattingModule(self.refinement)
        k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        self.LAPLOSS = ConstantBuffers(KERNEL=torch.outer(k1, k1) / 256.0)
        self.trimap = TrimapNet(self.hdim) if stage > 1 else None

    def train(self, mode: bool = True) -> OTVM:
        """Training mode with every BatchNorm kept in eval mode (running statistics used, never
        updated), as the authors' ``train.py`` sets it up: STM "disables BN during training" and
        ``cfg.TRAIN.FREEZE_BN`` is on.  All BatchNorms are in STM's encoders (FBA uses GroupNorm);
        their affine parameters still train."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.train(False)
        return self

    # -- per-frame steps ---------------------------------------------------------------------

    @staticmethod
    def pad_inputs(img: Tensor, trimap3: Tensor | None) -> tuple[Tensor, Tensor | None, tuple[int, int, int, int]]:
        """Centred zero padding of the RGB frame to a multiple of 32; the trimap's padding is
        background (bg channel 1, others 0), as in ``EvalModel.forward``."""
        img_p, pad = pad_to_multiple(img, 32)
        if trimap3 is None or sum(pad) == 0:
            return img_p, trimap3, pad
        tri_p = torch.cat((F.pad(trimap3[:, :1], pad, value=1.0), F.pad(trimap3[:, 1:], pad, value=0.0)), 1)
        return img_p, tri_p, pad

    def propagate(self, img: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Trimap logits ``[B, 3, H, W]`` (bg, unknown, fg) of a padded frame read from the memory;
        the loop feeds their softmax to the alpha network."""
        assert self.trimap is not None
        return self.trimap.model.segment(img, keys, values)

    def matte(self, img: Tensor, trimap3: Tensor) -> dict[str, Tensor]:
        """One alpha-network pass on a padded RGB frame (0..1) and its 3-channel trimap (probabilities).

        Returns ``alpha`` [B,1,H,W] (the refined one for stages 3-4), ``trimap`` (the refined trimap
        probabilities for stages 3-4, else the input), ``hid`` (16 ch), ``net_in`` (the 11-channel
        input: normalised RGB, 6 click maps, soft bg/fg) and the raw heads ``fba``, ``fba_refined``
        and ``trimap_logits``."""
        norm = (img - self.IMG_MEAN.squeeze(0)) / self.IMG_STD.squeeze(0)
        tri8 = trimap_features(trimap3)
        net_in = torch.cat([norm, tri8], 1)
        res = self.NET(net_in, img, tri8[:, -2:])
        res["net_in"] = net_in
        if self.refinement:
            res["alpha"] = res["fba_refined"][:, :1]
            res["trimap"] = F.softmax(res["trimap_logits"], dim=1)
        else:
            res["alpha"] = res["fba"][:, :1]
            res["trimap"] = trimap3
        return res

    def memorize(self, img: Tensor, trimap3: Tensor, alpha: Tensor, hid: Tensor) -> tuple[Tensor, Tensor]:
        """Memory key/value of a (padded) frame from its trimap (and, stages 3-4, alpha and hidden)."""
        assert self.trimap is not None
        masks = torch.cat([trimap3, alpha, hid], 1) if self.hdim > 0 else trimap3
        return self.trimap.model.memorize(img, masks)

    @staticmethod
    def update_memory(memory: Memory | None, new: Memory, first: bool, memorize: bool, max_num: int) -> Memory:
        """The authors' memory schedule (``EvalModel.forward``), on the T axis (dim 2).

        max_num 0: first frame only; 1: previous frame only; otherwise the first frame, every
        frame flagged ``memorize`` is appended, and the last slot is a rolling "previous frame"
        (it replaces the newest entry, so a flagged frame is kept only until the next frame: what
        stays is the frame just before each flagged one); beyond ``max_num`` entries the oldest
        after the first is dropped."""
        if max_num == 0:
            return new if (first or memory is None) else memory
        if max_num == 1 or first or memory is None:
            return new
        k, v = memory
        if memorize or k.shape[2] == 1:
            k, v = torch.cat([k, new[0]], 2), torch.cat([v, new[1]], 2)
        else:
            k, v = torch.cat([k[:, :, :-1], new[0]], 2), torch.cat([v[:, :, :-1], new[1]], 2)
        if k.shape[2] > max_num:
            k, v = torch.cat([k[:, :, :1], k[:, :, 2:]], 2), torch.cat([v[:, :, :1], v[:, :, 2:]], 2)
        return k, v

    @staticmethod
    def memory_schedule(h: int, w: int, memory_skip: int = 10, memory_max: int = 5) -> tuple[int, int]:
        """(skip, max slots) for a frame size: ``eval.py`` doubles the skip and halves the maximum
        when the short side exceeds 1100 px."""
        if min(h, w) > 1100:
            return int(memory_skip * 2), int(memory_max / 2)
        return memory_skip, memory_max

    # -- clip inference ----------------------------------------------------------------------

    @torch.no_grad()
    def forward_clip(self, frames: Tensor, first_trimap: Tensor, memory_skip: int = 10, memory_max: int = 5,
                     return_intermediates: bool = False) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list]:
        """The authors' video loop (``eval.py`` + ``EvalModel.forward``) on one clip.

        frames ``[T, 3, H, W]`` RGB in 0..1; first_trimap ``[1, H, W]`` (0 bg, 1 fg, else unknown)
        or ``[3, H, W]`` one-hot (bg, unknown, fg), for frame 0 only.  Memory: frame 0, every
        ``memory_skip``-th frame, and the previous frame, at most ``memory_max`` (doubled skip and
        halved max when the short side exceeds 1100 px, as in ``eval.py``).
        Returns alphas ``[T, 1, H, W]`` and trimaps ``[T, 3, H, W]`` (the refined trimap
        probabilities for stages 3-4, else the propagated ones); with ``return_intermediates``
        also a per-frame list of dicts (padded-resolution tensors)."""
        t_len, _, h, w = frames.shape
        skip, max_num = self.memory_schedule(h, w, memory_skip, memory_max)
        tri0 = trimap_to_onehot(first_trimap).unsqueeze(0).to(device=frames.device, dtype=torch.float32)
        memory: Memory | None = None
        alphas, trimaps, inter = [], [], []
        for i in range(t_len):
            first, last = i == 0, i == t_len - 1
            flag = (i % skip == 0) if skip > 2 else False
            img, tri_in, pad = self.pad_inputs(frames[i : i + 1].float(), tri0)
            rec: dict[str, Tensor] = {}
            if not first and self.trimap is not None:
                assert memory is not None
                rec["prop_logits"] = self.propagate(img, *memory)
                tri_in = F.softmax(rec["prop_logits"], dim=1)
            res = self.matte(img, tri_in)
            if self.trimap is not None and not last:
                new = self.memorize(img, res["trimap"], res["alpha"], res["hid"])
                memory = self.update_memory(memory, new, first, flag, max_num)
                rec.update(mem_key=new[0], mem_val=new[1], memory_slots=torch.tensor(memory[0].shape[2]))
            alphas.append(unpad(res["alpha"], pad))
            trimaps.append(unpad(res["trimap"], pad))
            if return_intermediates:
                rec.update(res)
                inter.append(rec)
        out = (torch.cat(alphas, 0), torch.cat(trimaps, 0))
        return (*out, inter) if return_intermediates else out

    @torch.no_grad()
    def stream_step(self, frame: Tensor, index: int, memory: Memory | None, first_trimap: Tensor | None = None,
                    memory_skip: int = 10, memory_max: int = 5) -> tuple[Tensor, Tensor, Memory | None]:
        """One frame of :meth:`forward_clip` for streaming: frame ``[1, 3, H, W]`` RGB 0..1, its
        index in the video, the memory so far (None before frame 0) and, for frame 0, the trimap
        (``[1, H, W]`` or ``[3, H, W]``).  Returns (alpha ``[1, 1, H, W]``, trimap ``[1, 3, H, W]``,
        new memory).  ``memory_skip`` / ``memory_max`` as forward_clip's (pass the frame size's
        values from :meth:`memory_schedule`).  Equal to forward_clip frame by frame; the only
        difference is that the last frame is memorised too (the stream cannot know it is last),
        which changes no output."""
        flag = (index % memory_skip == 0) if memory_skip > 2 else False
        if index == 0:
            if first_trimap is None:
                raise ValueError("frame 0 needs its trimap")
            tri0 = trimap_to_onehot(first_trimap).unsqueeze(0).to(device=frame.device, dtype=torch.float32)
            img, tri_in, pad = self.pad_inputs(frame.float(), tri0)
        else:
            img, _, pad = self.pad_inputs(frame.float(), None)
            if self.trimap is None:
                raise ValueError("stage 1 has no trimap network to stream with")
            assert memory is not None
            tri_in = F.softmax(self.propagate(img, *memory), dim=1)
        res = self.matte(img, tri_in)
        if self.trimap is not None:
            new = self.memorize(img, res["trimap"], res["alpha"], res["hid"])
            memory = self.update_memory(memory, new, index == 0, flag, memory_max)
        return unpad(res["alpha"], pad), unpad(res["trimap"], pad), memory

    # -- training ------------------------------------------------------------------------------

    def forward_train(self, frames: Tensor, first_trimap: Tensor) -> dict[str, Tensor]:
        """The authors' training forward (``models/alpha/model.py: FullModel.forward``) on clips.

        frames ``[B, T, 3, H, W]`` RGB in 0..1, H and W multiples of 32 (their training crops are
        not padded); first_trimap ``[B, 3, H, W]``, the ground-truth one-hot trimap (bg, unknown,
        fg) of frame 0 (or ``[B, 1, H, W]`` in {0, 0.5, 1}).

        Unlike :meth:`forward_clip`, the memory keeps every previous frame (no schedule) and
        frame 0 is memorised with the given trimap rather than the refined prediction; frames
        t > 0 are memorised with their refined trimap probabilities, refined alpha and hidden
        features (stages 3-4; stage 2: the input trimap and the decoder alpha).  Frames t > 0 go
        into the alpha network with the softmax of the propagated logits; gradients flow through
        the whole chain (alpha network -> memory -> propagation -> next alpha network) except
        the click maps, which the authors also compute without gradient.

        Returns ``fba`` ``[B, T, 7, H, W]`` (decoder alpha, F, B after FBA's fusion), ``alpha``
        ``[B, T, 1, H, W]`` (the output alpha: refined for stages 3-4), ``prop_logits``
        ``[B, T-1, 3, H, W]`` (STM's logits of frames 1..T-1) and, for stages 3-4,
        ``fba_refined`` ``[B, T, 7, H, W]`` and ``trimap_logits`` ``[B, T, 3, H, W]`` (refined)."""
        if self.trimap is None:
            raise ValueError("forward_train needs the trimap network (stage >= 2)")
        b, t_len, _, h, w = frames.shape
        if h % 32 or w % 32:
            raise ValueError(f"training frames must be multiples of 32, got {h}x{w}")
        tri_in = trimap_to_onehot(first_trimap).float()
        keys: Tensor | None = None
        values: Tensor | None = None
        fba, fba_ref, tri_logits, prop_logits = [], [], [], []
        for t in range(t_len):
            img = frames[:, t]
            res = self.matte(img, tri_in)
            fba.append(res["fba"])
            if self.refinement:
                fba_ref.append(res["fba_refined"])
                tri_logits.append(res["trimap_logits"])
                mem_tri, mem_alpha = (tri_in if t == 0 else res["trimap"]), res["fba_refined"][:, :1]
            else:
                mem_tri, mem_alpha = tri_in, res["fba"][:, :1]
            if t == t_len - 1:
                break
            k, v = self.memorize(img, mem_tri, mem_alpha, res["hid"])
            keys = k if keys is None else torch.cat([keys, k], 2)
            values = v if values is None else torch.cat([values, v], 2)
            logits = self.propagate(frames[:, t + 1], keys, values)
            prop_logits.append(logits)
            tri_in = F.softmax(logits, dim=1)
        out = {"fba": torch.stack(fba, 1)}
        if self.refinement:
            out.update(fba_refined=torch.stack(fba_ref, 1), trimap_logits=torch.stack(tri_logits, 1))
        out["alpha"] = (out["fba_refined"] if self.refinement else out["fba"])[:, :, :1]
        out["prop_logits"] = (torch.stack(prop_logits, 1) if prop_logits
                              else frames.new_zeros(b, 0, 3, h, w))
        return out


def load_authors_state_dict(src: str | Path | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Read an authors' checkpoint (``s3_OTVM.pth`` / ``s4_OTVM.pth``: a flat state dict of the
    whole model) into a dict that :class:`OTVM` loads strictly; tolerates a ``state_dict``
    wrapper and ``module.`` prefixes (DataParallel), which the released files do not have."""
    sd = torch.load(src, map_location="cpu", weights_only=True) if isinstance(src, (str, Path)) else src
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
