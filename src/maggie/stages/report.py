"""Stage ``report``: ``metrics.json``, the tables, the method comparison and the figures -> ``reports/``.

Reads every evaluation under ``eval/`` (see ``maggie.evaluation.report``).
"""

from __future__ import annotations

import sys

from maggie.evaluation.report import run
from maggie.stages import USER_ERRORS, parser_for, run_stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("report", parser_for(__doc__), lambda args: run(args.params), argv, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
