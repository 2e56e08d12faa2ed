"""Shared fixtures: the parity material in ../shared (next to the repository) and small helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAGGIE_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
# The developer tools in benchmarks/ (outside the package): the parity tests read the fixtures
# through the same helpers as benchmarks/parity_report.py.
sys.path.insert(0, str(REPO / "benchmarks"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY / "maggie_image_weights.safetensors").exists():
        pytest.skip(f"parity fixtures not found under {PARITY}")
    return PARITY


def repo_params() -> dict:
    """The repository's params.yaml (the single source of every default)."""
    from maggie.config.params import load_params

    return load_params(REPO / "params.yaml")


def params_with(overrides: dict, base: dict | None = None) -> dict:
    """params.yaml with ``overrides`` deep-merged over it (as a preset is)."""
    from maggie.config.presets import deep_merge

    return deep_merge(base if base is not None else repo_params(), overrides)
