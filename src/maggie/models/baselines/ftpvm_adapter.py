"""FTP-VM as a baseline of the project: the project's inputs in, one FTP-VM run per instance.

FTP-VM mattes one object from a memory frame and its trimap.  The project gives ImageNet-normalised
clips ``image [B, T, 3, H, W]`` and binary guidance masks ``mask [B, T, N, H, W]``; here every
(batch item, instance slot) whose guidance is non-empty in frame 0 becomes one row of a folded batch,
with the memory trimap made from that instance's frame-0 guidance:

* ``first_alpha [B, N, H, W]`` given (the MaGGIe paper's protocol: their ``tools/FTP-VM`` fed the first
  frame's true alpha): MaGGIe's rule, ``memory_trimap_maggie``; in training, the authors' own training
  trimap of that alpha (``trimap_from_alpha`` with the row's random kernel, the same kernel as the
  row's targets, so the memory trimap is frame 0's target trimap, as theirs);
* otherwise the mask: ``trimap_from_alpha(mask0, width)``, a 0.5 band straddling the mask edge, ``width``
  the authors' 25 px scaled to the frame (25 at a 576 px short side) in eval, the authors' random
  training width and shape scaled to the crop in training (``random_trimap_kernel``).

Slots empty in frame 0 get no run and an all-zero alpha.  The backbone runs once per clip, the memory
encoder, memory read and decoders once per row.  State-dict keys are the authors' (the class is an
``FTPVM``), so ``saves/ftpvm.pth`` and MaGGIe's fine-tuned checkpoint load strictly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from maggie.models.baselines.ftpvm import FTPVM
from maggie.models.baselines.ftpvm_blocks import Rec, pad_divide_by, unpad
from maggie.models.baselines.ftpvm_loss import (
    EVAL_REF_SIZE,
    EVAL_TRIMAP_WIDTH,
    TRAIN_REF_SIZE,
    TRAIN_TRIMAP_WIDTHS,
    ftpvm_loss,
    memory_trimap_maggie,
    random_trimap_kernel,
    scale_width,
    training_targets,
    trimap_from_alpha,
)
from maggie.models.maggie.network import check_inputs

FTPVM_ARCHS = ("ftpvm",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FTPVMConfig:
    arch: str = "ftpvm"
    trimap_width: int = EVAL_TRIMAP_WIDTH  # eval memory trimap from a mask: this width ...
    trimap_ref_size: int = EVAL_REF_SIZE  # ... at this short side, scaled to the frame's
    memory_dilation: int = 15  # eval memory trimap from an alpha: MaGGIe's dilation of its soft pixels (at 576 p)
    train_widths: tuple[int, int] = TRAIN_TRIMAP_WIDTHS  # training: the authors' odd widths ...
    train_ref_size: int = TRAIN_REF_SIZE  # ... on crops of this size, scaled to the crop's short side
    min_width: int = 3
    chunk: int = 8  # eval: frames per network call (the authors' frames_per_item; results do not depend on it)
    max_long_side: int = 1024  # eval: run at most this long side, guided-filter upsampling above (MaGGIe's script)
    memory_from_alpha: bool = True  # training: the memory trimap from frame 0's true alpha, as the authors'

    def __post_init__(self) -> None:
        self.train_widths = tuple(self.train_widths)  # a list after a JSON round trip (saved weights' metadata)

    def to_dict(self) -> dict:
        return asdict(self)


def unnormalize(image: Tensor) -> Tensor:
    """ImageNet-normalised RGB ``[..., 3, H, W]`` -> RGB in 0..1, what FTP-VM takes."""
    mean = image.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = image.new_tensor(IMAGENET_STD)[:, None, None]
    return image * std + mean


@dataclass
class FTPVMStream:
    """What ``step`` carries from frame to frame: the encoded memory and the GRU states of every row."""

    rows: Tensor  # [R] batch index of each run
    slots: Tensor  # [R] its instance slot
    key: Tensor | None  # [R, 1, 112, h, w] memory key feature (None: no instance)
    value: Tensor | None  # [R, 112, 1, h, w] memory value
    rec: list[Rec]  # [[r8, r16], [r1, r2]], each [R, C, h, w] or None before the first frame
    pad: tuple[int, int, int, int]
    num_slots: int
    downsample_ratio: float = 1.0


class FTPVMBaseline(FTPVM):
    """The authors' network (their state-dict keys, so ``saves/ftpvm.pth`` loads strictly) with the project's inputs."""

    archs = FTPVM_ARCHS
    is_video = True
    first_frame_guided = True  # guided by frame 0 only; evaluation may give that frame's true alpha

    def __init__(self, cfg: FTPVMConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or FTPVMConfig()
        if self.cfg.arch not in self.archs:
            raise ValueError(f"unknown FTP-VM arch {self.cfg.arch!r}; expected one of {self.archs}")

    @staticmethod
    def instances(guidance0: Tensor) -> tuple[Tensor, Tensor]:
        """``[B, N, H, W]`` frame-0 guidance -> (batch index, slot) of the non-empty slots, in row order."""
        return (guidance0.flatten(2).amax(-1) > 0).nonzero(as_tuple=True)

    def forward(self, image: Tensor, mask: Tensor, first_alpha: Tensor | None = None, prev_alpha=None,
                state=None) -> dict[str, Tensor]:
        """image ``[B, T, 3, H, W]`` (ImageNet-normalised), mask ``[B, T, N, H, W]`` -> ``{"alpha": [B, T, N, H, W]}``.

        Only frame 0 of ``mask`` is used (the memory).  Eval: the authors' video loop for every row
        (``start`` + ``step`` over chunks of ``cfg.chunk`` frames), alphas clamped to 0..1.  Train: also
        ``trimap_logits``, ``boundary``, ``collab`` (``[R, T, ...]``, ``FTPVM.forward_train``), ``rows``
        (``[R, 2]``: the (b, n) of each row) and ``trimap_kernels`` (``[R, 2]``: its (width, shape)), what
        ``ftpvm_objective`` needs.  ``prev_alpha`` is ignored; ``state`` only serves ``cfg.memory_from_alpha``.
        """
        mask = check_inputs(image, mask)
        if not self.training:
            stream = self.start(image[:, 0], mask[:, 0], first_alpha)
            alphas = []
            for s in range(0, image.size(1), self.cfg.chunk):
                alpha, stream = self.step(image[:, s:s + self.cfg.chunk], stream)
                alphas.append(alpha)
            return {"alpha": torch.cat(alphas, 1)}
        b, t, n, h, w = mask.shape
        if first_alpha is None and self.cfg.memory_from_alpha and getattr(state, "gt_alpha", None) is not None:
            first_alpha = state.gt_alpha.unflatten(0, (b, t))[:, 0]
        rows, slots = self.instances(mask[:, 0])
        if rows.numel() == 0:
            raise ValueError("FTP-VM trains on instances visible in frame 0; this batch has none")
        kernels = [random_trimap_kernel(min(h, w), None, self.cfg.train_widths, self.cfg.train_ref_size,
                                        self.cfg.min_width) for _ in range(rows.numel())]
        guide = (first_alpha if first_alpha is not None else mask[:, 0])[rows, slots]
        memory = torch.stack([trimap_from_alpha(g, k, shape=s) for g, (k, s) in zip(guide, kernels, strict=True)])
        out = self.forward_train(unnormalize(image), memory[:, None, None], rows)
        alpha = image.new_zeros(b, t, n, h, w)
        alpha[rows, :, slots] = out["collab"][:, :, 0]
        return {**out, "alpha": alpha, "rows": torch.stack([rows, slots], 1),
                "trimap_kernels": torch.tensor(kernels, dtype=torch.long).reshape(-1, 2)}

    # -- streaming (eval) ---------------------------------------------------------------------
    def memory_trimaps(self, guidance0: Tensor, first_alpha: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Frame-0 guidance ``[B, N, H, W]`` -> (rows, slots, eval memory trimaps ``[R, H, W]``)."""
        rows, slots = self.instances(guidance0)
        size = min(guidance0.shape[-2:])
        if first_alpha is not None:  # MaGGIe's script ran at a 576 px short side: the same band, scaled
            dilation = scale_width(self.cfg.memory_dilation, size, self.cfg.trimap_ref_size, self.cfg.min_width)
            return rows, slots, memory_trimap_maggie(first_alpha[rows, slots], dilation)
        width = scale_width(self.cfg.trimap_width, size, self.cfg.trimap_ref_size, self.cfg.min_width)
        return rows, slots, trimap_from_alpha(guidance0[rows, slots], width)

    @torch.no_grad()
    def start(self, frame0: Tensor, guidance0: Tensor, first_alpha: Tensor | None = None) -> FTPVMStream:
        """Encode the memory of every instance of frame 0: ``frame0 [B, 3, H, W]`` (ImageNet-normalised),
        ``guidance0 [B, N, H, W]`` binary masks (``first_alpha [B, N, H, W]`` optional, see the module doc).

        Then call ``step`` on every frame, frame 0 included (the authors query the memory frame too)."""
        rows, slots, trimaps = self.memory_trimaps(guidance0, first_alpha)
        h, w = frame0.shape[-2:]
        ratio = min(1.0, self.cfg.max_long_side / max(h, w))
        rgb, pad = pad_divide_by(unnormalize(frame0)[:, None], 16)
        key = value = None
        if rows.numel():
            key, value = self.encode_imgs_to_value(rgb, pad_divide_by(trimaps[:, None, None], 16)[0], ratio, rows)
        return FTPVMStream(rows, slots, key, value, self.default_rec, pad, guidance0.size(1), ratio)

    @torch.no_grad()
    def step(self, frame: Tensor, stream: FTPVMStream) -> tuple[Tensor, FTPVMStream]:
        """One frame ``[B, 3, H, W]`` (or a chunk ``[B, t, 3, H, W]``), ImageNet-normalised -> alphas
        ``[B, N, H, W]`` (``[B, t, N, H, W]``) in 0..1 and the updated stream (GRU states carried)."""
        single = frame.dim() == 4
        x = unnormalize(frame[:, None] if single else frame)
        b, t, _, h, w = x.shape
        out = x.new_zeros(b, t, stream.num_slots, h, w)
        if stream.key is not None:
            _, _, alpha, rec = self.forward_with_memory(pad_divide_by(x, 16)[0], stream.key, stream.value,
                                                        *stream.rec, downsample_ratio=stream.downsample_ratio,
                                                        rows=stream.rows)
            out[stream.rows, :, stream.slots] = unpad(alpha, stream.pad)[:, :, 0].clamp(0, 1)
            stream = replace(stream, rec=rec)
        return (out[:, 0] if single else out), stream


def ftpvm_objective(out: dict[str, Tensor], batch: dict[str, Tensor], w=None) -> dict[str, Tensor]:
    """The registry's objective for ``ftpvm``: the authors' matting-pass loss on the rows of ``out``.

    Targets come from each row's true alpha ``batch["alpha"][b, :, n]`` with the kernel its memory trimap
    was made with; the authors' loss weights are fixed (``w``, the project's loss weights, is unused).
    """
    b, n = out["rows"].unbind(1)
    gt = batch["alpha"][b, :, n].unsqueeze(2)  # [R, T, 1, H, W]
    kernels = [tuple(k) for k in out["trimap_kernels"].tolist()]
    return ftpvm_loss(out, gt, training_targets(gt, kernels=kernels)["label"])
