"""Build a throw-away copy of the project with the ``tiny`` preset applied (for end-to-end tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY = ["src", "workflow", "presets", "pretrain", "dvc.yaml", "params.yaml", "pyproject.toml", "README.md",
        ".dvcignore"]


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    sys.path.insert(0, str(REPO / "src"))
    import yaml

    from maggie.config.params import load_params
    from maggie.config.presets import apply_preset, deep_merge

    apply_preset("tiny", str(dest / "params.yaml"), str(dest / "presets"))
    if overrides:
        merged = deep_merge(load_params(dest / "params.yaml"), overrides)
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    return dest


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["WANDB_MODE"] = "disabled"
    e["OMP_NUM_THREADS"] = "1"
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def make_data(project: Path) -> None:
    run([sys.executable, "-m", "maggie.stages.pull", "--params", "params.yaml"], project)
    for kind in ("image_train", "image_test", "video_train", "video_test"):
        run([sys.executable, "-m", "maggie.stages.synthesize", kind, "--params", "params.yaml"], project)
