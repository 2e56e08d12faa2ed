"""The pipeline's stages as DVC resolves them, for the Snakemake workflow to mirror.

``dvc.yaml`` is the single definition.  Rather than re-implementing DVC's templating
(``${...}`` from params.yaml, ``foreach``/``matrix`` expansion), we ask DVC itself for the
resolved stages, so Snakemake runs exactly the commands on exactly the files DVC would.

    python -m maggie.config.dag        # print the resolved stages as JSON
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str          # DVC's address, e.g. "evaluate_image@in_dist"
    group: str         # the dvc.yaml entry it comes from, e.g. "evaluate_image"
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]          # every output (outs, metrics, plots)
    persistent: tuple[str, ...]    # outputs DVC keeps between runs (``persist: true``)
    params: dict[str, Any] = field(default_factory=dict)  # the params.yaml values the stage depends on

    @property
    def params_json(self) -> str:
        """The stage's params values as one string: Snakemake reruns the rule when it changes, as DVC does."""
        return json.dumps(self.params, sort_keys=True)

    @property
    def rule(self) -> str:
        """A valid Snakemake rule name."""
        return re.sub(r"\W", "_", self.name.replace("@", "__"))


def load_stages(root: str | Path = ".") -> list[Stage]:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError as exc:
        raise SystemExit(f"{Path(root).resolve()}: not a DVC repository; run from a clone of the project "
                         "(or 'git init && dvc init' in a copy)") from exc
    with repo:
        stages = []
        for st in repo.index.stages:
            if not getattr(st, "cmd", None):
                continue
            outs = tuple(o.def_path for o in st.outs)
            params: dict[str, Any] = {}
            for d in st.deps:
                if hasattr(d, "read_params"):
                    params.update(d.read_params())
            stages.append(Stage(
                name=st.addressing,
                group=st.addressing.split("@")[0],
                cmd=st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd),
                deps=tuple(d.def_path for d in st.deps if not hasattr(d, "read_params")),
                outs=outs,
                persistent=tuple(o.def_path for o in st.outs if o.persist),
                params=params,
            ))
    return stages


def is_directory_output(path: str) -> bool:
    """DVC outputs without a file suffix are folders (data/raw, reports, models/image/ckpt)."""
    return Path(path).suffix == ""


def producers(stages: list[Stage]) -> dict[str, Stage]:
    return {o: s for s in stages for o in s.outs}


def resolve_inputs(stage: Stage, stages: list[Stage], root: str | Path = ".") -> list[str]:
    """Inputs for Snakemake: each dep, or, for a folder that other stages write into
    (``eval/image``), every output under it, or, for a path inside a stage's output folder, that
    folder, or, for a source folder no stage writes (``src/maggie/models``, ``pretrain``), every file
    in it: Snakemake's mtime check sees a file edited inside a folder only through the file.  The
    stage's params values are the rule's params (see ``Stage.params_json``)."""
    made = producers(stages)
    root = Path(root)
    inputs = []
    for dep in stage.deps:
        if dep == "params.yaml":
            continue
        if dep in made:
            inputs.append(dep)
            continue
        inside = [o for o in made if o.startswith(dep.rstrip("/") + "/")]
        # A path inside another stage's output folder (data/V-HIM60/comp_hard): that folder.
        within = [o for o in made if dep.startswith(o.rstrip("/") + "/")]
        if not inside and not within and (root / dep).is_dir():
            inputs.extend(source_files(root, dep))
            continue
        inputs.extend(inside or within or [dep])
    return inputs


def source_files(root: Path, folder: str) -> list[str]:
    """The files of a source folder, as DVC hashes them (caches and hidden files left out)."""
    base = root / folder
    return sorted(str(p.relative_to(root)) for p in base.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith("."))


def resources(params: dict[str, Any], group: str) -> dict[str, Any]:
    """Snakemake threads and resources of a stage group: ``workflow.default`` updated by ``workflow.<group>``."""
    table = params.get("workflow") or {}
    return {**(table.get("default") or {}), **(table.get(group) or {})}


def main() -> int:
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    print(json.dumps([asdict(s) | {"rule": s.rule} for s in load_stages(root)], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
