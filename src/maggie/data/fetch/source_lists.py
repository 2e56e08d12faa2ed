"""Fetch the published split lists of the real sources (``data.real.lists``) into ``<root>/raw/lists``.

The authors publish text lists next to their data: ``invalid_him.txt`` (HHM foregrounds to skip),
``fg_train.txt`` / ``fg_test.txt`` (foreground clips) and ``bg_train.txt`` / ``bg_test.txt``
(background images and clips).  They come from the same kinds of places as the datasets:

    from: local   location: a folder holding the files
    from: url     location: an http(s) base URL (``<location>/<file>``)
    from: hf      location: a Hugging Face dataset repo id (``revision`` optional)
    from: s3      location: s3://bucket/prefix (``endpoint_url`` optional)

Every file is written through a temporary name and renamed, so a failed fetch leaves no half list.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from maggie.data.layout import DataError
from maggie.files import atomic_write

LIST_FILES = ["invalid_him.txt", "fg_train.txt", "fg_test.txt", "bg_train.txt", "bg_test.txt"]


def _atomic_copy(src_open, dest: Path) -> None:
    def copy(tmp: Path) -> None:
        with open(tmp, "wb") as out, src_open() as src:
            shutil.copyfileobj(src, out)

    atomic_write(dest, copy)


def _fetch_local(location: str, name: str, dest: Path) -> None:
    src = Path(location) / name
    if not src.is_file():
        raise DataError(f"{src}: list file not found (data.real.lists.location)")
    _atomic_copy(lambda: src.open("rb"), dest)


def _fetch_url(location: str, name: str, dest: Path) -> None:
    url = location.rstrip("/") + "/" + name
    try:
        _atomic_copy(lambda: urllib.request.urlopen(url, timeout=30), dest)
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} ({exc.reason})") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise DataError(f"{url}: cannot download ({getattr(exc, 'reason', exc)})") from exc


def _fetch_hf(cfg: dict[str, Any], name: str, dest: Path) -> None:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise DataError("data.real.lists from hf needs huggingface_hub: pip install huggingface_hub") from exc
    repo = cfg["location"]
    try:
        path = Path(hf_hub_download(repo, name, repo_type="dataset", revision=cfg.get("revision") or None,
                                    cache_dir=cfg.get("cache_dir") or None))
    except Exception as exc:
        raise DataError(f"hf: could not get {name} from {repo} ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    _atomic_copy(lambda: path.open("rb"), dest)


def _fetch_s3(cfg: dict[str, Any], name: str, dest: Path) -> None:
    from maggie.data.fetch.remote import _download_s3_object, _explain_s3, _s3_client, parse_s3_url

    bucket, prefix = parse_s3_url(cfg["location"])
    client = _s3_client(cfg)
    key = prefix + name
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download_s3_object(client, bucket, key, int(head["ContentLength"]), head.get("ETag", ""), dest)
    except DataError:
        raise
    except Exception as exc:
        raise _explain_s3(exc, f"s3://{bucket}/{key}", cfg.get("endpoint_url")) from exc


def fetch_lists(cfg: dict[str, Any] | None, out_dir: Path) -> list[Path]:
    """Fetch ``cfg['files']`` (default: all published lists) into ``out_dir``; returns their paths."""
    cfg = dict(cfg or {})
    kind, location = cfg.get("from", "local"), cfg.get("location")
    files = list(cfg.get("files") or LIST_FILES)
    if not location:
        raise DataError("data.real.lists.location is not set; point it at the folder, URL, hub repo or "
                        "s3://bucket/prefix holding " + ", ".join(files))
    fetch = {"local": lambda n, d: _fetch_local(location, n, d), "url": lambda n, d: _fetch_url(location, n, d),
             "hf": lambda n, d: _fetch_hf(cfg, n, d), "s3": lambda n, d: _fetch_s3(cfg, n, d)}.get(kind)
    if fetch is None:
        raise DataError(f"data.real.lists.from must be local, url, hf or s3, got {kind!r}")
    out = []
    for name in files:
        if Path(name).name != name:
            raise DataError(f"data.real.lists.files: {name!r} must be a plain file name")
        fetch(name, out_dir / name)
        out.append(out_dir / name)
    return out


def read_list(path: Path) -> list[str]:
    """Non-empty, stripped lines (a published list), or a one-line error naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: list file missing; run the pull stage (data.real.lists)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
