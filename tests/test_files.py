"""The one atomic writer: whole files and folders or nothing, modes as the umask allows, stale partials cleared."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from maggie.files import atomic_dir, atomic_write, partial_path, remove_stale_partials, write_json, write_png
from maggie.models import MaGGIe, MaggieConfig, save_weights


@pytest.fixture()
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_follow_the_umask(tmp_path, umask022):
    write_json(tmp_path / "metrics.json", {"a": 1})
    write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    with atomic_dir(tmp_path / "dataset") as d:
        (d / "inner").mkdir()
        write_json(d / "inner" / "m.json", {})
    save_weights(MaGGIe(MaggieConfig()), tmp_path / "w" / "best.safetensors")
    for f in ("metrics.json", "x.png", "dataset/inner/m.json", "w/best.safetensors"):
        assert mode(tmp_path / f) == 0o644, f
    for d in ("dataset", "dataset/inner", "w"):
        assert mode(tmp_path / d) == 0o755, d
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    assert mode(tmp_path / "private.json") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    write_json(tmp_path / "m.json", {"old": True})

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "m.json", broken)
    assert (tmp_path / "m.json").read_text().strip().startswith("{") and "old" in (tmp_path / "m.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "folder") as d:
            (d / "a").write_text("x")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_partials_of_killed_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = dead.stdout.strip()
    (tmp_path / f".best.safetensors.{pid}-0.partial").write_bytes(b"half")
    (tmp_path / f".eval.{pid}-3.partial").mkdir()
    mine = partial_path(tmp_path / "mine.json")
    mine.write_text("in progress")
    removed = remove_stale_partials(tmp_path)
    assert len(removed) == 2 and mine.exists()
