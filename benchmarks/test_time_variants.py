"""Evaluation-time variants of the video network on the video splits, measured and not adopted.

    python benchmarks/test_time_variants.py models/image/best.safetensors --video models/video/best.safetensors \\
        --variant flip
    python benchmarks/test_time_variants.py ... --variant scales --scales 192 256
    python benchmarks/test_time_variants.py ... --variant refine_all_detail --splits comp_hard

What a change at evaluation alone (same weights) does to the video figures (MAD, ratio to the tracker mask,
dtSSD), with the default's sum rule and its finer run where people meet (``--finer-where-meeting 0``: without):
* ``flip``: each clip also run mirrored left-right, the two mattes averaged (2x the network's cost; the padded
  tensor is mirrored, so where the frame needs padding the mirrored run sees it on the left);
* ``scales``: the clips run at each short side of ``--scales`` and the mattes, mapped back to the frame,
  averaged (the cost grows with the pixels of every scale); with ``--meeting-radius R`` only where two
  people's guidance masks, grown by R px, overlap (the first scale's mattes elsewhere);
* ``refine_all_detail``: the OS4 and OS1 mattes used everywhere in the detail region D instead of in the
  reference's bands around the uncertain pixels (is a band too narrow for an edge the network gets wrong?);
* ``sum_rule``: the network's mattes as they are, with another rule where the people's mattes add up to more
  than 1 (``--rule``): ``off``, ``scale`` (all alike), ``guided`` (the default's), ``winner`` (the largest matte
  keeps its value, the others share what it leaves), ``guided_winner`` (the guided first, the winner among them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import maggie.models.maggie.decoder as decoder  # noqa: E402
from maggie.config.params import load_params  # noqa: E402
from maggie.engine.checkpoints import video_network_from  # noqa: E402
from maggie.evaluation.benchmarks import video_against_mask  # noqa: E402
from maggie.inference import pipeline  # noqa: E402


class Mirrored(torch.nn.Module):
    """The network's mattes averaged with those of its left-right mirrored inputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image, masks, prev_alpha=None):
        a = self.model(image, masks, prev_alpha=prev_alpha)["alpha"]
        flipped_prev = None if prev_alpha is None else prev_alpha.flip(-1)
        b = self.model(image.flip(-1), masks.flip(-1), prev_alpha=flipped_prev)["alpha"].flip(-1)
        return {"alpha": (a + b) / 2}


def average_over_scales(scales: list[int], meeting_radius: int | None = None) -> None:
    """Make the evaluation's clip streaming run once per short side and average the mattes (with
    ``meeting_radius``: only in the band where two people's guidance masks meet; the first scale elsewhere)."""
    single = pipeline._fused_mattes

    def fused(model, frames, short_size, device, clip_length, pad_to):
        frames = list(frames)
        runs = [single(model, iter(frames), s, device, clip_length, pad_to) for s in scales]
        for (_, masks), outs in zip(frames, zip(*runs, strict=True), strict=True):
            mean = sum(outs) / len(outs)
            if meeting_radius is None:
                yield mean
            else:
                band = pipeline.meeting_band(masks, meeting_radius)
                yield outs[0] * (1 - band) + mean * band

    pipeline._fused_mattes = fused


def refine_in_all_of_detail() -> None:
    """OS4, then OS1, wherever D is (the reference: in bands around the uncertain pixels, inside D)."""
    def fuse(alpha8, alpha4, alpha1, detail, train, boxes=True):
        w = (detail > 0).to(alpha8.dtype)
        alpha = torch.where(w > 0, alpha1.to(alpha8.dtype), alpha8)
        return alpha, w, w

    decoder.fuse_progressive = fuse


def winner_first(alpha, mask):
    """Where the mattes add up to more than 1: the largest keeps its value, the rest share what it leaves."""
    import numpy as np

    total = alpha.sum(-3, keepdims=True)
    top = alpha.max(-3, keepdims=True)
    is_top = (alpha == top) & (np.cumsum(alpha == top, axis=-3) == 1)
    others = total - top
    room = np.clip(1 - top, 0, None)
    scale = np.where(others > room, room / np.maximum(others, 1e-6), 1)
    return np.where(mask, np.where(is_top, np.minimum(alpha, 1), alpha * scale), alpha)


def use_sum_rule(rule: str) -> None:
    """Replace the evaluation's sum rule (``params test.sum_to_one`` stays 'guided', so the hook is called)."""
    import numpy as np

    original = pipeline.limit_sum

    def limit(alpha, masks=None):
        over = alpha.sum(-3, keepdims=True) > 1
        if rule == "off":
            return alpha
        if rule == "scale":
            return original(alpha, None)
        if rule == "guided":
            return original(alpha, masks)
        if rule == "winner":
            return winner_first(alpha, over).astype(alpha.dtype, copy=False)
        guided = masks > 0
        inside = np.where(guided, alpha, 0)
        kept = winner_first(inside, inside.sum(-3, keepdims=True) > 1)   # the guided, the winner first
        room = np.clip(1 - kept.sum(-3, keepdims=True), 0, None)
        outside = np.where(guided, 0, alpha)
        out_sum = outside.sum(-3, keepdims=True)
        outside = outside * np.where(out_sum > room, room / np.maximum(out_sum, 1e-6), 1)
        return np.where(guided, kept, outside).astype(alpha.dtype, copy=False)

    pipeline.limit_sum = limit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", help="image network weights")
    ap.add_argument("--video", required=True, help="video-network weights, loaded over the image weights")
    ap.add_argument("--variant", required=True, choices=["none", "flip", "scales", "refine_all_detail", "sum_rule"])
    ap.add_argument("--rule", default="guided", choices=["off", "scale", "guided", "winner", "guided_winner"],
                    help="for --variant sum_rule")
    ap.add_argument("--scales", type=int, nargs="+", default=[192, 256], help="short sides for --variant scales")
    ap.add_argument("--meeting-radius", type=int, default=None,
                    help="--variant scales: average only where two people's masks grown by this many px overlap")
    ap.add_argument("--splits", nargs="*", default=None, help="default: test.video.splits")
    ap.add_argument("--finer-where-meeting", type=int, default=None,
                    help="test.video.meeting_short_size for this run (0: off; default: params.yaml's; --variant "
                    "scales turns it off, as it makes its own runs)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    args = ap.parse_args()
    params = load_params(args.params)
    if args.splits:
        params["test"]["video"]["splits"] = args.splits
    if args.finer_where_meeting is not None or args.variant == "scales":
        params["test"]["video"]["meeting_short_size"] = args.finer_where_meeting or None
    model = video_network_from(args.image, args.video)
    if args.variant == "flip":
        model = Mirrored(model)
    elif args.variant == "scales":
        average_over_scales(args.scales, args.meeting_radius)
    elif args.variant == "refine_all_detail":
        refine_in_all_of_detail()
    elif args.variant == "sum_rule":
        params["test"]["sum_to_one"] = "guided"
        use_sum_rule(args.rule)
    result = video_against_mask(model, params)
    label = args.variant + {"scales": f" {args.scales} meeting_radius {args.meeting_radius}",
                            "sum_rule": f" {args.rule}"}.get(args.variant, "")
    print(label, json.dumps({s: {"MAD": round(r["MAD"]), "ratio": round(r["ratio"], 3), "dtSSD": round(r["dtSSD"], 3)}
                             for s, r in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
