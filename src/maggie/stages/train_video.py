"""Stage ``train_video`` (and ``train_baseline_video@<m>``): the video network on V-HIM2K5 -> ``models/video/``.

Initialised from ``train.video.init`` (the image stage by default); resumable; run with ``torchrun``.
"""

from __future__ import annotations

import sys

from maggie.stages.train_image import train_main


def main(argv: list[str] | None = None) -> int:
    return train_main("video", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
