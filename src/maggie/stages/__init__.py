"""One module per ``dvc.yaml`` stage, named like it: parse the stage's arguments, call the library,
write the stage's outputs.  ``python -m maggie.stages.<stage> --help`` documents each.

Stage (dvc.yaml)                                  module
``pull``                                          ``pull``
``synthesize@<dataset>``                          ``synthesize``
``train_image``, ``train_baseline_image@<m>``     ``train_image`` (``--method m``)
``train_video``, ``train_baseline_video@<m>``     ``train_video`` (``--method m``)
``evaluate_image@<subset>``, ``evaluate_{baseline,reference}_image@...``  ``evaluate_image``
``evaluate_video``, ``evaluate_{baseline,reference}_video@<m>``       ``evaluate_video``
``qualitative``                                   ``qualitative``
``report``                                        ``report``

A stage ends with one line naming what is wrong and exit code 2 on bad settings or data;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from maggie.errors import USER_ERRORS


def run_stage(name: str, parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], Any],
              argv: list[str] | None = None, errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """Parse ``argv``, run ``body(args)``; a user error becomes ``<name>: error: ...`` and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # timeout, docker stop, SLURM: staged outputs are cleaned up
    try:
        body(args)
    except errors as exc:
        print(f"{name}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; its outputs were left as they were", file=sys.stderr)
        return 130
    return 0


def _terminate(signum, frame):
    raise KeyboardInterrupt


def one_line(exc: BaseException) -> str:
    """The message of a user error; one raised in a DataLoader worker carries the worker's traceback, keep
    only its own last line."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return text.splitlines()[0] if text else exc.__class__.__name__


def parser_for(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser described by the stage module's first docstring line, with ``--params``."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    return ap

