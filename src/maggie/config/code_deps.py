"""The code each pipeline stage runs: the import closure of its stage module inside ``maggie``.

``dvc.yaml`` lists it as the stage's code dependencies (checked by the tests, so it cannot
drift), and the training engine hashes it to decide whether a checkpoint belongs to the same
run.  Imports are found statically (every ``import``/``from ... import`` in a module, function
bodies included, except a module-level ``__getattr__``: the package's lazy user API, which runs
only when that name is asked for), with the ``__init__`` of every package on the way; data files
that sit next to a module (the params schema) belong to it.

    python -m maggie.config.code_deps train_image       # the files, one per line
    python -m maggie.config.code_deps --dvc train_image # as dvc.yaml deps (folders where whole)
    python -m maggie.config.code_deps --affects src/maggie/data/augment.py   # the stage modules that run it
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/maggie
SRC = PACKAGE_ROOT.parent
DATA_SUFFIXES = (".yaml", ".json")


def module_file(name: str) -> Path | None:
    """``maggie.a.b`` -> its file (module or package ``__init__``), None outside the package."""
    parts = name.split(".")
    if parts[0] != "maggie":
        return None
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def direct_imports(path: Path) -> frozenset[str]:
    """Module names a file imports (absolute; relative ones resolved), including ``from m import sub``."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    names: set[str] = set()
    lazy = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    skip = {id(n) for f in lazy for n in ast.walk(f)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return frozenset(n for n in names if n.split(".")[0] == "maggie")


def closure(module: str) -> list[Path]:
    """Every file of ``maggie`` that importing ``module`` may execute or read, sorted."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way, then the module itself
            f = module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(direct_imports(f))
    data = {d for f in seen for d in f.parent.iterdir() if d.suffix in DATA_SUFFIXES and d.is_file()}
    return sorted(seen | data)


def stage_closure(stage_module: str) -> list[Path]:
    return closure(f"maggie.stages.{stage_module}")


def code_hash(files: list[Path]) -> str:
    """One sha256 over the files' paths and contents."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(SRC)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def as_dvc_deps(files: list[Path], root: Path) -> list[str]:
    """The files as dvc.yaml deps: a folder wherever every file under it is in the set."""
    chosen = set(files)

    def whole(folder: Path) -> bool:
        return all(p in chosen for p in _package_files(folder))

    out: list[str] = []
    covered: set[Path] = set()
    for f in sorted(chosen):
        if f in covered:
            continue
        top = None
        folder = f.parent
        while folder != SRC and whole(folder):
            top = folder
            folder = folder.parent
        if top is not None:
            out.append(str(top.relative_to(root)))
            covered.update(_package_files(top))
        else:
            out.append(str(f.relative_to(root)))
            covered.add(f)
    return sorted(set(out))


def _package_files(folder: Path) -> list[Path]:
    """The source and data files DVC would hash under ``folder`` (caches excluded)."""
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
            and (p.suffix == ".py" or p.suffix in DATA_SUFFIXES)]


def affected(path: str | Path) -> list[str]:
    """The stage modules whose import closure holds ``path`` (editing it makes their stages stale)."""
    target = Path(path).resolve()
    stages = sorted(p.stem for p in (PACKAGE_ROOT / "stages").glob("*.py") if p.stem != "__init__")
    return [s for s in stages if target in {f.resolve() for f in stage_closure(s)}]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--affects":
        for path in args[1:]:
            print(f"{path}: {', '.join(affected(path)) or 'no stage'}")
        return 0
    dvc = "--dvc" in args
    args = [a for a in args if a != "--dvc"]
    root = SRC.parent
    for stage in args:
        files = stage_closure(stage)
        lines = as_dvc_deps(files, root) if dvc else [str(f.relative_to(root)) for f in files]
        print(f"# {stage}")
        print("\n".join(f"- {x}" if dvc else x for x in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
