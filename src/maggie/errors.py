"""The errors a user can cause, each reported as one line naming the file or setting (exit code 2).

Anything else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """A missing, unknown or malformed setting in a params file."""


class DataError(ValueError):
    """Bad or missing data, reported as one line naming the file."""


class WeightsError(ValueError):
    """Weights that cannot be used: missing file, unknown format, missing or unexpected keys."""


USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, DataError, WeightsError, FileNotFoundError)
