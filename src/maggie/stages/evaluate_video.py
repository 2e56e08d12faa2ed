"""Stage ``evaluate_video@<split>`` (and the baselines' and references'): one video split.

Writes ``eval/video/<split>.json`` (``eval/methods/<m>/...`` for other methods): the method and
the tracker mask used as the alpha, on sliding clips as the reference tests.
"""

from __future__ import annotations

import sys

from maggie.stages.evaluate_image import evaluate_main


def main(argv: list[str] | None = None) -> int:
    return evaluate_main("video", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
