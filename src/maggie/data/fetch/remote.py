"""Fetching the published archives: the Hugging Face dataset or an S3 bucket.

Both download ``<dataset>.zip`` plus its split segments ``<dataset>.zNN`` into a download
folder that is kept between runs: an interrupted download resumes (S3: ranged GET on the
``.part`` file; hub: huggingface_hub's own resume), sizes are checked against what the
server announces, and S3 ETags that are plain MD5s are verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from maggie.data.layout import DataError

log = logging.getLogger("maggie.data.pull")
ARCHIVE = re.compile(r"^(?P<name>.+)\.(zip|z\d\d)$")


def wanted_files(names: list[str], datasets: list[str]) -> list[str]:
    """The archive files of the chosen datasets among a listing, in segment order."""
    out = []
    for ds in datasets:
        parts = sorted(n for n in names if (m := ARCHIVE.match(Path(n).name)) and m["name"] == ds)
        if not any(p.endswith(".zip") for p in parts):
            raise DataError(f"no {ds}.zip among the {len(names)} files of the source")
        out += parts
    return out


# --------------------------------------------------------------------------- Hugging Face


def fetch_hf(cfg: dict[str, Any], datasets: list[str], downloads: Path) -> dict[str, Path]:
    """Download the datasets' archives from the hub dataset repo; returns {dataset: path of its .zip}."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise DataError("data.source hf needs huggingface_hub: pip install huggingface_hub") from exc
    repo_id = cfg.get("repo_id") or "chuonghm/MaGGIe-HIM"
    patterns = [f"{d}.zip" for d in datasets] + [f"{d}.z[0-9][0-9]" for d in datasets]
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=cfg.get("revision") or None,
                                        allow_patterns=patterns, cache_dir=cfg.get("cache_dir") or None))
    except LocalEntryNotFoundError as exc:
        raise DataError(f"hf: {repo_id} is not in the local cache and the hub cannot be reached; connect to the "
                        "internet (unset HF_HUB_OFFLINE), or set HF_ENDPOINT to a mirror") from exc
    except Exception as exc:  # network, auth (gated/private), missing repo
        raise DataError(f"hf: could not download {repo_id} ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); "
                        "check the repo id and your token (huggingface-cli login or HF_TOKEN)") from exc
    files = [p.name for p in folder.iterdir()]
    wanted_files(files, datasets)  # every dataset has its .zip
    return {d: folder / f"{d}.zip" for d in datasets}


# --------------------------------------------------------------------------- S3


def parse_s3_url(url: str) -> tuple[str, str]:
    m = re.match(r"^s3://([^/]+)/?(.*)$", url or "")
    if not m:
        raise DataError(f"data.s3.url must look like s3://bucket/prefix, got {url!r}")
    prefix = m[2]
    return m[1], (prefix.rstrip("/") + "/") if prefix else ""


def _s3_client(cfg: dict[str, Any]):
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise DataError("data.source s3 needs boto3: pip install boto3 (or the [pipeline] extra)") from exc
    endpoint = cfg.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint, region_name=cfg.get("region") or None,
                        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10))


def _explain_s3(exc: Exception, url: str, endpoint: str | None) -> DataError:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"{url}" + (f" at {endpoint}" if endpoint else "")
    if isinstance(exc, NoCredentialsError):
        return DataError(f"s3: no credentials for {where}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                         "(or AWS_PROFILE)")
    if isinstance(exc, EndpointConnectionError):
        return DataError(f"s3: cannot reach {where}; check data.s3.endpoint_url and the network")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return DataError(f"s3: {where}: {code} ({exc.response.get('Error', {}).get('Message', '')})")
    return DataError(f"s3: {where}: {exc.__class__.__name__}: {exc}")


def _download_s3_object(client, bucket: str, key: str, size: int, etag: str, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == size:
        return
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    if have < size:
        extra = {"Range": f"bytes={have}-"} if have else {}
        body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        with part.open("ab") as f, tqdm(total=size, initial=have, unit="B", unit_scale=True, desc=dest.name,
                                        leave=False) as bar:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if got != size:
        raise DataError(f"s3://{bucket}/{key}: downloaded {got} bytes, the server announced {size}; run pull again")
    plain_md5 = etag.strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", plain_md5):  # single-part upload: the ETag is the MD5
        h = hashlib.md5()
        with part.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != plain_md5:
            part.unlink()
            raise DataError(f"s3://{bucket}/{key}: checksum mismatch (MD5 {h.hexdigest()} != ETag {plain_md5}); "
                            "the partial file was removed, run pull again")
    os.replace(part, dest)


def fetch_s3(cfg: dict[str, Any], datasets: list[str], downloads: Path) -> dict[str, Path]:
    """Download the datasets' archives from ``data.s3.url``; returns {dataset: path of its .zip}."""
    from botocore.exceptions import BotoCoreError, ClientError

    url = cfg.get("url")
    bucket, prefix = parse_s3_url(url)
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        client = _s3_client(cfg)
        objects = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                objects[obj["Key"][len(prefix):]] = obj
        for name in wanted_files(list(objects), datasets):
            obj = objects[name]
            _download_s3_object(client, bucket, obj["Key"], int(obj["Size"]), obj.get("ETag", ""),
                                downloads / Path(name).name)
            log.info("s3: %s ready (%d bytes)", name, obj["Size"])
    except (BotoCoreError, ClientError) as exc:
        raise _explain_s3(exc, url, cfg.get("endpoint_url")) from exc
    return {d: downloads / f"{d}.zip" for d in datasets}
