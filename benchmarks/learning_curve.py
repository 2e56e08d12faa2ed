"""The long image-stage run's learning curve: validation MAD against steps, next to the mask-as-alpha line.

    python -m maggie.preset pretrain
    torchrun --standalone -m maggie.stages.train_image --params params.yaml     # hours on 2 CPU cores, resumable
    python benchmarks/learning_curve.py models/pretrain/image/val_curve.csv \
        --phase2 models/pretrain/image2/val_curve.csv      # optional: the pretrain2 preset's continuation

The run is the pretrain preset's image stage (the default's recipe and network, from scratch, on the first
training pools); ``--phase2`` appends the pretrain2 preset's continuation from its last weights (on the
default's own training data), its steps counted on from phase 1's last.  Validation is the first
``val_count`` images of ``test.image.val_subset``/``val_source`` (in_dist / sim05_holes), where the guidance
mask used as the alpha scores ``mask_MAD``.  Writes ``benchmarks/learning_curve.csv`` (phase, step, MAD,
mask_MAD, ratio) and ``benchmarks/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.files import write_figure, write_text  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("val_curve", help="the run's val_curve.csv")
    ap.add_argument("--phase2", help="the continuation's val_curve.csv (pretrain2 preset)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "learning_curve"))
    ap.add_argument("--title", default="Image stage from scratch (pretrain preset), then on the default's data "
                    "(pretrain2), 2 CPU cores")
    args = ap.parse_args()
    phases = [(1, args.val_curve)] + ([(2, args.phase2)] if args.phase2 else [])
    points: list[tuple[int, int, float, float]] = []  # (phase, step, MAD, mask_MAD)
    for phase, path in phases:
        rows = [r for r in csv.DictReader(open(path)) if r.get("MAD")]
        if not rows:
            print(f"learning_curve: error: {path}: no validation rows", file=sys.stderr)
            return 2
        offset = points[-1][1] if points else 0
        points += [(phase, offset + int(r["step"]), float(r["MAD"]), float(r["mask_MAD"])) for r in rows]
    steps = [p[1] for p in points]
    mad = [p[2] for p in points]
    mask = [p[3] for p in points]
    lines = ["phase,step,MAD,mask_MAD,ratio"] + [f"{ph},{s},{a:.1f},{m:.1f},{a / m:.3f}" for ph, s, a, m in points]
    out = Path(args.out)
    write_text(out.with_suffix(".csv"), "\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    one = [p for p in points if p[0] == 1]
    ax.plot([p[1] for p in one], [p[2] for p in one], marker="o", label="MaGGIe (validation MAD), phase 1")
    two = [p for p in points if p[0] == 2]
    if two:
        ax.plot([one[-1][1]] + [p[1] for p in two], [one[-1][2]] + [p[2] for p in two], marker="s", color="C1",
                label="phase 2: the default's training data (pretrain2 preset)")
    ax.plot(steps, mask, ls="--", color="k", label="guidance mask used as the alpha")
    cross = next((s for s, a, m in zip(steps, mad, mask, strict=True) if a < m), None)
    if cross is not None:
        ax.axvline(cross, color="C2", lw=0.8, ls=":", label=f"first below the mask: step {cross}")
    ax.set_xlabel("training step (batch 4, crop 128)")
    ax.set_ylabel("MAD (in_dist / sim05_holes, first 16 images)")
    ax.set_yscale("log")
    ax.set_title(args.title, fontsize=9)
    ax.legend(fontsize=8)
    write_figure(out.with_suffix(".png"), fig)
    print(f"{len(points)} points; last: step {steps[-1]} MAD {mad[-1]:.0f} vs mask {mask[-1]:.0f} "
          f"({mad[-1] / mask[-1]:.2f}x); first below the mask at step {cross}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
