"""FTP-VM (Huang & Lee, CVPR 2023, "End-to-End Video Matting With Trimap Propagation") in plain PyTorch.

The network is the authors' ``FastTrimapPropagationVideoMatting`` (github.com/csvt32745/FTP-VM, commit
9fa2c7bd) rebuilt without timm, torchvision, einops, kornia or OpenCV.  Module and parameter names follow
the authors' state dict exactly (``saves/ftpvm.pth`` is a plain ``state_dict()``, no ``module.`` prefix), so
``FTPVM().load_state_dict(torch.load("ftpvm.pth"), strict=True)`` works.  The MobileNetV3 encoder is in
``ftpvm_backbone``.

Shape conventions follow the authors: images are ``[B, T, 3, H, W]`` in 0..1 (no mean/std
normalisation), memory trimaps ``[B, Tm, 1, H, W]`` with 0 = background, 0.5 = unknown, 1 = foreground,
and ``H, W`` multiples of 16 (``forward_clip`` pads like the authors' inference core).

Training: ``FTPVM.forward_train`` is the forward of the authors' matting pass (``model/model.py``
``far_mat_pass`` with their defaults), ``training_targets`` makes their random dilated trimaps and
``ftpvm_loss`` is their GFM matting loss (``model/losses.py``, ``MatLossComputer.gfm_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from maggie.models.baselines.ftpvm_backbone import Backbone
from maggie.models.baselines.ftpvm_blocks import (
    BottleneckFusion,
    MattingDecoderFrom4x,
    Projection,
    Rec,
    SegmentationDecoderTo4x,
    TrimapGatedFusion,
    avg_pyramid,
    collaborate_fuse,
    collaborate_fuse_trimap,
    downsample_padded,
    fast_guided_filter,
    pad_divide_by,
    seg_to_trimap,
    take_rows,
    unpad,
)

# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------


class FTPVM(nn.Module):
    """FastTrimapPropagationVideoMatting with the authors' defaults and parameter names.

    One shared MobileNetV3 encodes query and memory frames; memory values come from the trimap fusion,
    the query reads them by attention at stride 16; a GRU trimap decoder predicts 3-class logits at 1/4
    (upsampled) and a GRU matting decoder a boundary matte at full resolution; the final alpha is the
    boundary matte inside the predicted unknown band, 1 in the predicted foreground.
    """

    def __init__(self, ch_bottleneck: int = 128, ch_key: int = 32, ch_seg: Sequence[int] = (96, 48, 16),
                 ch_mat: Sequence[int] = (64, 32, 16, 8), ch_mask: int = 1, backbone_run_unused: bool = False) -> None:
        super().__init__()
        self.backbone = Backbone(backbone_run_unused)  # run_unused: see ftpvm_backbone (BN statistics only)
        ch = self.backbone.channels
        self.trimap_fuse = TrimapGatedFusion(ch, ch_mask=ch_mask)
        self.bottleneck_fuse = BottleneckFusion(ch[-1], ch_key, ch[-1], ch_bottleneck)
        feat_ch = ch[:-1] + [ch_bottleneck]
        self.seg_decoder = SegmentationDecoderTo4x(feat_ch, ch_seg)
        self.seg_project = Projection(ch_seg[-1], 3)
        self.mat_decoder = MattingDecoderFrom4x(feat_ch, [ch_bottleneck, *ch_seg], ch_mat)
        self.mat_project = Projection(ch_mat[-1], 1)
        # the authors' FastGuidedFilterRefiner has no parameters; it is ``fast_guided_filter`` here

    @property
    def default_rec(self) -> list[Rec]:
        return [[None, None], [None, None]]

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu") -> FTPVM:
        """Load ``saves/ftpvm.pth`` (a plain state dict) or a training ``*_checkpoint.pth`` (``network`` entry).

        As the authors' ``check_and_load_model_dict``, stray ``refiner.*`` keys (old guided-filter
        refiners with weights) are dropped; everything else must match strictly.
        """
        sd = torch.load(path, map_location=map_location, weights_only=True)
        sd = sd.get("network", sd)
        model = cls()
        model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("refiner.")}, strict=True)
        return model.eval()

    # -- memory -------------------------------------------------------------------------------
    def encode_imgs_to_value(self, imgs: Tensor, masks: Tensor, downsample_ratio: float = 1,
                             rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Memory frames ``[B, Tm, 3, H, W]`` + trimaps ``[B, Tm, 1, H, W]`` -> (key feature, value).

        The key feature is the raw stride-16 backbone feature ``[B, Tm, 112, h, w]`` (the key projection
        is applied at read time), the value ``[B, 112, Tm, h, w]``.  With ``rows`` (``[R]`` indices into
        the B clips) the backbone runs once per clip and the trimaps are ``[R, Tm, 1, H, W]``, one memory
        per row: several objects of one clip, each with its own trimap.
        """
        if downsample_ratio != 1:
            imgs, masks = downsample_padded(imgs, downsample_ratio), downsample_padded(masks, downsample_ratio)
        feats = take_rows(self.backbone(imgs), rows)
        return feats[-1], self.trimap_fuse(masks, feats)

    encode_memory = encode_imgs_to_value

    # -- per-step inference -------------------------------------------------------------------
    def forward_with_memory(self, qimgs: Tensor, m_feat16: Tensor, m_value: Tensor, rec_seg: Rec | None = None,
                            rec_mat: Rec | None = None, downsample_ratio: float = 1,
                            segmentation_pass: bool = False, rows: Tensor | None = None) -> list:
        """Query frames ``[B, T, 3, H, W]`` against an encoded memory; the authors' inference step.

        Returns ``[trimap_logits [B,T,3,H,W], boundary_matte [B,T,1,H,W], alpha [B,T,1,H,W],
        [rec_seg, rec_mat]]`` (``[trimap_logits, rec_seg]`` with ``segmentation_pass``).  With ``rows``
        the memory and recurrent states are per row (``[R, ...]``, see ``encode_imgs_to_value``), the
        backbone runs once per clip and the outputs are ``[R, T, ...]``.
        """
        if rec_mat is None:
            rec_seg, rec_mat = self.default_rec
        refine = downsample_ratio != 1
        qimg_sm = downsample_padded(qimgs, downsample_ratio) if refine else qimgs
        feats = take_rows(self.backbone(qimg_sm), rows)
        qimgs, qimg_sm = take_rows([qimgs, qimg_sm], rows)
        feats[-1] = self.bottleneck_fuse(feats[-1], m_feat16, m_value)
        return self.decode(qimgs, qimg_sm, feats, segmentation_pass, refine, rec_seg, rec_mat)

    def forward(self, qimgs: Tensor, mimgs: Tensor, masks: Tensor, rec_seg: Rec | None = None,
                rec_mat: Rec | None = None, downsample_ratio: float = 1, segmentation_pass: bool = False,
                replace_given_seg: bool = False) -> list:
        """The authors' training-style forward: memory frames encoded in the same backbone batch as the queries.

        Same outputs as ``forward_with_memory``.  (In train mode the backbone's BatchNorm statistics
        span query and memory frames together, as in the authors' training.)
        """
        if rec_seg is None:
            rec_seg, rec_mat = self.default_rec
        refine = downsample_ratio != 1
        if refine:
            qimg_sm, mimg_sm, mask_sm = (downsample_padded(x, downsample_ratio) for x in (qimgs, mimgs, masks))
        else:
            qimg_sm, mimg_sm, mask_sm = qimgs, mimgs, masks
        feats_q = self._read_memory(qimg_sm, mimg_sm, mask_sm)
        replace = mask_sm if replace_given_seg else None
        return self.decode(qimgs, qimg_sm, feats_q, segmentation_pass, refine, rec_seg, rec_mat, replace)

    def _read_memory(self, qimgs: Tensor, mimgs: Tensor, masks: Tensor, rows: Tensor | None = None) -> list[Tensor]:
        """Queries and memory frames through one backbone batch; memory values, read at 1/16 -> query features."""
        q = qimgs.size(1)
        feats = take_rows(self.backbone(torch.cat([qimgs, mimgs], dim=1)), rows)
        feats_q = [f[:, :q] for f in feats]
        feats_m = [f[:, q:] for f in feats]
        value = self.trimap_fuse(masks, feats_m)
        feats_q[-1] = self.bottleneck_fuse(feats_q[-1], feats_m[-1], value)
        return feats_q

    def forward_train(self, frames: Tensor, memory_trimap: Tensor, rows: Tensor | None = None) -> dict[str, Tensor]:
        """The forward of the authors' matting pass (``model/model.py`` ``far_mat_pass``, their defaults).

        ``frames [B, T, 3, H, W]`` in 0..1; the memory is frame 0 with ``memory_trimap [R, 1, 1, H, W]``
        (the authors: the query trimap of frame 0, ``data['trimap'][:, [0]]``); the queries are all T
        frames, frame 0 included (``same_mem_que=1``; clips of <= 4 frames always), from zero recurrent
        states.  The network stays in whatever mode it is in (the authors train with BatchNorm in train
        mode; the backbone's batch holds the T query frames and the memory frame of every clip).

        ``rows`` (``[R]`` long, default ``arange(B)``): the clip of each memory trimap, to run several
        objects of a clip (each its own trimap and decoders) with one backbone pass per clip.  Returns
        ``trimap_logits [R,T,3,H,W]``, ``boundary [R,T,1,H,W]`` (the focus matte) and ``collab
        [R,T,1,H,W]`` (the fused alpha; its gradient reaches only the boundary matte).
        """
        feats_q = self._read_memory(frames, frames[:, :1], memory_trimap, rows)
        frames = take_rows([frames], rows)[0]
        seg, mat, collab, _ = self.decode(frames, frames, feats_q, False, False, *self.default_rec)
        return {"trimap_logits": seg, "boundary": mat, "collab": collab}

    def decode(self, qimgs: Tensor, qimg_sm: Tensor, feats_q: list[Tensor], segmentation_pass: bool, refine: bool,
               rec_seg: Rec, rec_mat: Rec, replace_seg: Tensor | None = None) -> list:
        img2, img4, img8 = avg_pyramid(qimg_sm, 3)
        hid, r8, r16, (s4, _, s16) = self.seg_decoder(img4, img8, feats_q[2], feats_q[3], *rec_seg)
        out_seg = self.seg_project(hid)
        out_seg = F.interpolate(out_seg.flatten(0, 1), scale_factor=[4, 4], mode="bilinear",
                                align_corners=False).unflatten(0, out_seg.shape[:2])
        if segmentation_pass:
            return [out_seg, [r8, r16]]
        hid, r1, r2 = self.mat_decoder(qimg_sm, img2, img4, feats_q[0], feats_q[1], s4, s16, *rec_mat)
        out_mat = torch.sigmoid(self.mat_project(hid))
        if replace_seg is None:
            out_collab = collaborate_fuse(out_seg, out_mat)
        else:
            t = replace_seg.size(1)
            out_collab = torch.zeros_like(out_mat)
            out_collab[:, :t] = collaborate_fuse_trimap(replace_seg, out_mat[:, :t])
            if out_mat.size(1) > t:
                out_collab[:, t:] = collaborate_fuse(out_seg[:, t:], out_mat[:, t:])
        if refine:
            fine, base = qimgs.flatten(0, 1), qimg_sm.flatten(0, 1)
            out_collab = fast_guided_filter(base.mean(1, keepdim=True), out_collab.flatten(0, 1),
                                            fine.mean(1, keepdim=True)).unflatten(0, qimgs.shape[:2])
        return [out_seg, out_mat, out_collab, [[r8, r16], [r1, r2]]]

    # -- whole clip ---------------------------------------------------------------------------
    @torch.no_grad()
    def forward_clip(self, frames: Tensor, first_frame_guidance: Tensor, downsample_ratio: float = 1,
                     chunk: int = 8, return_all: bool = False) -> Tensor | dict[str, Tensor]:
        """Matte one object through a clip from its first-frame trimap, the authors' video inference loop.

        ``frames [T, 3, H, W]`` in 0..1, ``first_frame_guidance [1, H, W]`` (or ``[H, W]``): the memory
        trimap (0 / 0.5 / 1; a binary mask is accepted as is, see ``trimap_from_alpha`` to make one).
        As the authors' ``InferenceCoreRecurrentMemory`` with its defaults: frames and trimap padded to
        multiples of 16 (centred zeros); the memory is frame 0 with its trimap, encoded once and never
        updated; all frames (frame 0 included) are queried in order in chunks of ``chunk`` frames with the
        GRU states carried across chunks (the chunk size does not change the result).  Returns the
        alphas ``[T, 1, H, W]`` (with ``return_all`` a dict adding ``trimap`` (0/0.5/1) and ``boundary``).
        """
        guide = first_frame_guidance.reshape(1, 1, 1, *frames.shape[-2:]).to(frames)
        frames_p, pad = pad_divide_by(frames, 16)
        guide_p = pad_divide_by(guide, 16)[0]
        memory = self.encode_imgs_to_value(frames_p[None, :1], guide_p, downsample_ratio)
        rec: list[Rec] = self.default_rec
        alphas, trimaps, bounds = [], [], []
        for s in range(0, frames_p.shape[0], chunk):
            seg, mat, alpha, rec = self.forward_with_memory(frames_p[None, s:s + chunk], *memory, *rec,
                                                            downsample_ratio=downsample_ratio)
            alphas.append(alpha[0])
            trimaps.append(seg_to_trimap(seg)[0])
            bounds.append(mat[0])
        alpha = unpad(torch.cat(alphas), pad)
        if not return_all:
            return alpha
        return {"alpha": alpha, "trimap": unpad(torch.cat(trimaps), pad).to(alpha.dtype),
                "boundary": unpad(torch.cat(bounds), pad)}


