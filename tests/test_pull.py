"""The pull stage's real download paths: split-zip joining, S3 against a local moto server, the hub cache."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import params_with

from maggie.data.fetch.archives import extract_zip, join_split_zip, split_segments
from maggie.data.layout import DataError

REPO = Path(__file__).resolve().parents[1]
needs_zip = pytest.mark.skipif(shutil.which("zip") is None, reason="the zip tool is needed to build split archives")


def fake_dataset(root: Path, name: str, files: int = 12, size: int = 30000) -> Path:
    d = root / name
    for i in range(files):
        p = d / "images" / f"{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    (d / "alphas").mkdir()
    (d / "alphas" / "note.txt").write_text(f"{name} alphas")
    return d


def same_tree(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def make_archive(src_root: Path, name: str, out_dir: Path, split: str | None = None, zip64: bool = False) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    if split is None and not zip64:
        shutil.make_archive(str(out_dir / name), "zip", src_root, name)
    else:
        cmd = ["zip", "-q", "-r"] + (["-fz"] if zip64 else []) + (["-s", split] if split else [])
        subprocess.run(cmd + [str(out_dir / f"{name}.zip"), name], cwd=src_root, check=True)
    return out_dir / f"{name}.zip"


@needs_zip
@pytest.mark.parametrize("zip64", [False, True])
def test_split_archives_are_joined_and_extracted(tmp_path, zip64):
    src = fake_dataset(tmp_path / "src", "I-HIM50K")
    archive = make_archive(tmp_path / "src", "I-HIM50K", tmp_path / "dl", split="100k", zip64=zip64)
    assert len(split_segments(archive)) >= 3
    out = extract_zip(archive, tmp_path / "data" / "I-HIM50K")
    assert same_tree(src, out)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["I-HIM50K"], "no temporary leftovers"
    joined = join_split_zip(archive, tmp_path / "joined.zip")
    with zipfile.ZipFile(joined) as zf:
        assert zf.testzip() is None


@needs_zip
def test_a_missing_segment_is_a_clear_error(tmp_path):
    fake_dataset(tmp_path / "src", "V-HIM2K5")
    archive = make_archive(tmp_path / "src", "V-HIM2K5", tmp_path / "dl", split="100k")
    split_segments(archive)[1].unlink()  # .z02 missing: segments no longer line up
    with pytest.raises(DataError, match="V-HIM2K5"):
        extract_zip(archive, tmp_path / "data" / "V-HIM2K5")
    assert not (tmp_path / "data" / "V-HIM2K5").exists()


def test_members_outside_the_folder_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract_zip(archive, tmp_path / "data" / "evil")
    assert not (tmp_path / "data" / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()


def run_pull(project: Path, data: dict, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    params = params_with({"data": {"root": "data", "seed": 0, **data}})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    for k, v in (extra_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-m", "maggie.stages.pull", "--params", "params.yaml"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3_server():
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(exe).exists():
        pytest.skip("moto_server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_s3_pull_downloads_resumes_joins_and_extracts(tmp_path, s3_server, monkeypatch):
    import boto3

    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    src = tmp_path / "src"
    trees = {"HIM2K_M-HIM2K": fake_dataset(src, "HIM2K_M-HIM2K", files=4)}
    uploads = [make_archive(src, "HIM2K_M-HIM2K", tmp_path / "up")]
    if shutil.which("zip"):
        trees["I-HIM50K"] = fake_dataset(src, "I-HIM50K")
        uploads += split_segments(make_archive(src, "I-HIM50K", tmp_path / "up", split="100k"))
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="him")
    for f in uploads:
        s3.upload_file(str(f), "him", f"release/v1/{f.name}")
    s3.put_object(Bucket="him", Key="release/v1/unrelated.txt", Body=b"not an archive")

    project = tmp_path / "project"
    downloads = project / "data" / "downloads"
    downloads.mkdir(parents=True)
    # An interrupted earlier download: the first half of one archive.
    first = uploads[-1]
    (downloads / f"{first.name}.part").write_bytes(first.read_bytes()[: first.stat().st_size // 2])

    cfg = {"source": "s3", "s3": {"url": "s3://him/release/v1", "endpoint_url": s3_server,
                                  "datasets": sorted(trees)}}
    res = run_pull(project, cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    for name, tree in trees.items():
        assert same_tree(tree, project / "data" / "raw" / name), name
    assert (downloads / first.name).read_bytes() == first.read_bytes()
    assert not list(downloads.glob("*.part"))


def test_s3_errors_are_one_line(tmp_path, s3_server):
    project = tmp_path / "p"
    project.mkdir()
    # No credentials anywhere: every AWS variable of this machine removed, no files, no instance metadata.
    no_creds = {k: None for k in os.environ if k.startswith("AWS_")}
    no_creds.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
                    AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    cases = {
        "credentials": ({"url": "s3://him/x", "endpoint_url": s3_server}, no_creds, "AWS_ACCESS_KEY_ID"),
        "unreachable": ({"url": "s3://him/x", "endpoint_url": f"http://127.0.0.1:{free_port()}"}, CREDS,
                        "cannot reach"),
        "no bucket": ({"url": "s3://missing-bucket/x", "endpoint_url": s3_server}, CREDS, "NoSuchBucket"),
        "bad url": ({"url": "http://him/x", "endpoint_url": s3_server}, CREDS, "s3://bucket/prefix"),
    }
    for what, (s3cfg, env, needle) in cases.items():
        res = run_pull(project, {"source": "s3", "s3": s3cfg}, env)
        err = [line for line in res.stderr.splitlines() if "error" in line.lower()]
        assert res.returncode == 2, (what, res.stderr[-1500:])
        assert len(err) == 1 and needle in err[0] and "Traceback" not in res.stderr, (what, res.stderr)
        assert not (project / "data" / "raw").exists(), what


def test_hf_pull_from_the_hub_cache(tmp_path):
    """A hub cache laid out as huggingface_hub writes it, used offline: the real download code path."""
    src = tmp_path / "src"
    tree = fake_dataset(src, "V-HIM60", files=3)
    cache = tmp_path / "hf_cache"
    repo = cache / "datasets--chuonghm--MaGGIe-HIM"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    make_archive(src, "V-HIM60", snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    project = tmp_path / "project"
    project.mkdir()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}
    res = run_pull(project, {"source": "hf", "hf": {"repo_id": "chuonghm/MaGGIe-HIM", "revision": "main",
                                                    "datasets": ["V-HIM60"]}}, env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert same_tree(tree, project / "data" / "raw" / "V-HIM60")
    assert not list(snap.glob(".*")), "nothing written into the cache"
    # Not cached and offline: one line saying what to do.
    res = run_pull(project, {"source": "hf", "hf": {"repo_id": "someone/else", "datasets": ["V-HIM60"]}}, env)
    err = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert res.returncode == 2 and len(err) == 1 and "HF_HUB_OFFLINE" in err[0], res.stderr[-1500:]
    assert "Traceback" not in res.stderr


def test_pulled_datasets_go_through_the_synthesis_stages(tmp_path):
    """data.source local: pull copies the published folders into raw/, synthesis checks and places them."""
    from tiny_project import make_data, make_project

    made = make_project(tmp_path / "made")
    make_data(made)
    user = make_project(tmp_path / "user", {"data": {"source": "local", "local": {"path": str(made / "data")}}})
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    stages = (["maggie.stages.pull"], ["maggie.stages.synthesize", "image_test"],
              ["maggie.stages.synthesize", "video_test"])
    for cmd in stages:
        res = subprocess.run([sys.executable, "-m", *cmd, "--params", "params.yaml"], cwd=user, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    for name in ("HIM2K_M-HIM2K", "V-HIM60"):
        placed = user / "data" / name
        assert (placed / "contact_sheet.png").exists()
        for f in (made / "data" / name).rglob("*.png"):
            rel = f.relative_to(made / "data" / name)
            if rel.name != "contact_sheet.png":
                assert (placed / rel).read_bytes() == f.read_bytes(), rel
