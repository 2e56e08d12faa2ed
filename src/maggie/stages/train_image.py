"""Stage ``train_image`` (and ``train_baseline_image@<m>``): the image network on I-HIM50K -> ``models/image/``.

Validation on ``test.image.val_subset``/``val_source``; resumable from ``<out_dir>/ckpt``.  Run with ``torchrun``.
"""

from __future__ import annotations

import sys

from maggie.stages import USER_ERRORS, parser_for, run_stage


def train_main(stage: str, doc: str | None, argv: list[str] | None) -> int:
    """The two training stages: ``torchrun ... -m maggie.stages.train_<stage> [--method m]``."""
    from maggie.engine.loop import train

    ap = parser_for(doc)
    ap.add_argument("--max-iter", type=int, default=None, help=f"override train.{stage}.max_iter (e.g. to stop early)")
    ap.add_argument("--out-dir", default=None, help=f"override train.{stage}.out_dir")
    ap.add_argument("--method", default="maggie", help="maggie, or a baseline named under 'baselines' in params.yaml")
    return run_stage(f"train_{stage}", ap, lambda a: train(stage, a.params, a.max_iter, a.out_dir, a.method), argv,
                     USER_ERRORS + (ValueError,))


def main(argv: list[str] | None = None) -> int:
    return train_main("image", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
