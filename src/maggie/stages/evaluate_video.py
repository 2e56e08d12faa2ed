"""Stage ``evaluate_video`` (and the baselines' and references'): the video splits, in one process.

Writes ``eval/video/<split>.json`` (``eval/methods/<m>/...`` for other methods) for each of
``test.video.splits`` (or each ``--split``): the method and the tracker mask used as the alpha, on sliding
clips as the reference tests.
"""

from __future__ import annotations

import sys

from maggie.stages.evaluate_image import evaluate_main


def main(argv: list[str] | None = None) -> int:
    return evaluate_main("video", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
