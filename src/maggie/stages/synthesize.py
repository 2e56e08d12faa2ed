"""Stage ``synthesize@<dataset>``: one of the four datasets in its published layout -> ``<data.root>/<name>``.

``<dataset>`` is image_train (I-HIM50K), image_test (HIM2K + M-HIM2K), video_train (V-HIM2K5) or
video_test (V-HIM60); composed from the asset bank, or checked when the pull stage brought it ready
(see ``maggie.data.synth.datasets``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from maggie.data.layout import LayoutError
from maggie.data.synth.config import load_data_config
from maggie.data.synth.datasets import KINDS, synthesize
from maggie.stages import USER_ERRORS, parser_for, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = parser_for(__doc__)
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--out", default=None, help="dataset folder (default <data.root>/<published name>)")
    return run_stage("synthesize", ap, lambda a: synthesize(a.kind, load_data_config(a.params),
                                                            Path(a.out) if a.out else None),
                     argv, USER_ERRORS + (ValueError, LayoutError))


if __name__ == "__main__":
    sys.exit(main())
