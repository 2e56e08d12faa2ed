"""Stage ``qualitative``: mattes of a set with masks but no alpha -> ``eval/qualitative/``.

Matte previews and per-person temporal-stability plots for ``test.qualitative.dir``
(see ``maggie.evaluation.qualitative``).
"""

from __future__ import annotations

import logging
import sys

from maggie.evaluation.qualitative import run
from maggie.stages import USER_ERRORS, parser_for, run_stage

log = logging.getLogger("maggie.stages.qualitative")


def main(argv: list[str] | None = None) -> int:
    ap = parser_for(__doc__)
    ap.add_argument("--device", default="auto")

    def body(args) -> None:
        summary = run(args.params, args.device)
        for video, row in summary["videos"].items():
            log.info("%s: matte change %s vs mask change %s", video, row["matte_change_mean"],
                     row["mask_change_mean"])

    return run_stage("qualitative", ap, body, argv, USER_ERRORS + (OSError,))


if __name__ == "__main__":
    sys.exit(main())
