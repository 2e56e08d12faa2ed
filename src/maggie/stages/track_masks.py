"""Stage ``track_masks@<tracker>``: the video test splits' guidance from this project's own tracker.

Writes ``<test.out_dir>/tracked_masks/<tracker>/<split>/<video>/<frame>/NN.png`` and ``summary.json``
(IoU with the true masks per split): each video's true first-frame masks carried along DIS optical
flow (``flow``), re-anchored on the image stage's matte of every frame (``flow_network``, what
``maggie masks --weights`` does).  ``evaluate_video_tracked@<tracker>`` then evaluates the video
network on them, beside the test data's own masks.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from maggie.stages import parser_for, run_stage


def main(argv: list[str] | None = None) -> int:
    from maggie.config.methods import best_weights
    from maggie.config.params import load_params, section
    from maggie.evaluation.tracked_masks import TRACKERS, write_tracked_masks
    from maggie.files import partial_path, replace_dir

    ap = parser_for(__doc__)
    ap.add_argument("--tracker", required=True, choices=TRACKERS)
    ap.add_argument("--device", default="auto")

    def body(a: argparse.Namespace) -> None:
        params = load_params(a.params)
        predictor = None
        if a.tracker == "flow_network":
            from maggie.inference.predictor import Predictor

            predictor = Predictor(str(best_weights(params, "image")), short_size=section(params, "test")["short_size"],
                                  device=a.device)
        out = Path(section(params, "test")["out_dir"]) / "tracked_masks" / a.tracker
        stage = partial_path(out)  # the masks appear whole or not at all
        try:
            write_tracked_masks(params, a.tracker, stage, predictor)
            replace_dir(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    return run_stage("track_masks", ap, body, argv)


if __name__ == "__main__":
    sys.exit(main())
