#!/usr/bin/env bash
# The project's test command (README): lint, then the test suite, including one end-to-end
# run of the whole DAG on tiny params through DVC and one through Snakemake.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests benchmarks
python -m pytest -q tests
