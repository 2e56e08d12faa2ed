"""Stage ``pull``: make or fetch the raw data named by ``data.source`` -> ``<data.root>/raw``.

``procedural`` builds the asset bank, ``real`` indexes the published foreground/background
sources, ``local``/``hf``/``s3`` bring the published datasets (see ``maggie.data.fetch.pull``).
"""

from __future__ import annotations

import logging
import sys

from maggie.config.params import load_params
from maggie.data.fetch.pull import pull
from maggie.stages import USER_ERRORS, parser_for, run_stage

log = logging.getLogger("maggie.stages.pull")


def main(argv: list[str] | None = None) -> int:
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ap = parser_for(__doc__)
    return run_stage("pull", ap, lambda args: log.info("raw data ready in %s", pull(load_params(args.params))),
                     argv, USER_ERRORS + (OSError,))


if __name__ == "__main__":
    sys.exit(main())
