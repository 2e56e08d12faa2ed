"""The ``pull`` stage: make or fetch the raw data named by ``data.source`` in params.yaml.

``procedural`` (default, offline) builds the asset bank in ``<data.root>/raw``; ``real`` fetches the
published split lists and indexes the real foreground/background sources there (``data.real``);
``local`` takes the published datasets from a folder (``data.local.path``); ``hf`` and ``s3``
download the published archives (split zips joined) and extract them.  Pulled datasets land in
``<data.root>/raw/<name>`` (this stage's output); the synthesis stages check their layout and
place them at ``<data.root>/<name>``.  Everything is
built in a temporary folder next to the target and renamed into place when complete.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from maggie.config.params import ParamsError, section
from maggie.data.layout import DataError
from maggie.files import atomic_dir, remove_stale_partials, write_json

log = logging.getLogger("maggie.data.pull")
DATASETS = ("I-HIM50K", "HIM2K_M-HIM2K", "V-HIM2K5", "V-HIM60")


def pull_procedural(data: dict[str, Any]) -> Path:
    from maggie.data.synth.procedural import build_asset_bank

    root = Path(data["root"])
    target = root / "raw"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    with atomic_dir(target) as tmp:
        build_asset_bank(tmp, data.get("bank", {}), data.get("seed", 0), data.get("workers", 1))
    return target


def pull_local(data: dict[str, Any]) -> Path:
    src = (data.get("local") or {}).get("path")
    if not src:
        raise ParamsError("data.source is 'local' but data.local.path is not set; set it to the folder holding "
                          f"the published datasets ({', '.join(DATASETS)})")
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: data.local.path is not a folder")
    raw = Path(data["root"]) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    found = [d for d in DATASETS if (src / d).is_dir()]
    if not found:
        raise DataError(f"{src}: none of {', '.join(DATASETS)} found here")
    for name in found:
        with atomic_dir(raw / name) as tmp:
            shutil.copytree(src / name, tmp, dirs_exist_ok=True)
        log.info("copied %s", name)
    write_json(raw / "manifest.json", {"source": "local", "path": str(src), "datasets": found})
    return raw


def pull_real(data: dict[str, Any]) -> Path:
    """Fetch the split lists and index the real foreground/background sources into ``<root>/raw``."""
    from maggie.data.fetch.source_lists import fetch_lists
    from maggie.data.synth.real_sources import index_real_sources

    real = data.get("real") or {}
    root = Path(data["root"])
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    with atomic_dir(root / "raw") as tmp:
        if real.get("lists"):
            fetch_lists(real["lists"], tmp / "lists")
        manifest = index_real_sources(real, tmp / "lists")
        write_json(tmp / "manifest.json", manifest)
    counts = {pool: len(ids) for pool, ids in manifest["figures"].items()}
    log.info("real sources indexed: foregrounds per pool %s", counts)
    return root / "raw"


def pull_remote(data: dict[str, Any], source: str) -> Path:
    """Download the published archives (kept in ``<root>/downloads`` so a rerun resumes), then
    extract each dataset to ``<root>/<name>`` through a temporary folder."""
    from maggie.data.fetch.archives import extract_zip
    from maggie.data.fetch.remote import fetch_hf, fetch_s3

    cfg = data.get(source) or {}
    datasets = list(cfg.get("datasets") or DATASETS)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ParamsError(f"data.{source}.datasets: unknown {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    root = Path(data["root"])
    downloads = root / "downloads"
    archives = (fetch_hf if source == "hf" else fetch_s3)(cfg, datasets, downloads)
    for name, archive in archives.items():
        log.info("extracting %s", archive)
        extract_zip(archive, root / "raw" / name)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_json(raw / "manifest.json", {"source": source, "datasets": datasets,
                                       **{k: v for k, v in cfg.items() if k != "datasets"}})
    return raw


def pull(params: dict[str, Any]) -> Path:
    data = section(params, "data")
    source = data.get("source", "procedural")
    if source == "procedural":
        return pull_procedural(data)
    if source == "local":
        return pull_local(data)
    if source == "real":
        return pull_real(data)
    if source in ("hf", "s3"):
        return pull_remote(data, source)
    raise ParamsError(f"data.source must be procedural, real, hf, s3 or local, got {source!r}")
