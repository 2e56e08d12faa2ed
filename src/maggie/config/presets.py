"""Apply a settings preset to params.yaml, keeping its comments: ``python -m maggie.preset paper``.

A preset is a partial params file under ``presets/`` (``paper``, ``tiny``, ``real``, ``baselines``,
``pretrain``).  Its values are written into params.yaml in place (mappings merged, everything else
replaced), through a round-trip YAML writer so that params.yaml's comments, order and layout stay;
the result is checked against the schema before anything is written.  DVC and Snakemake read the
edited params.yaml as they would a hand edit, so ``dvc repro`` reruns exactly what the preset changes.

``default`` brings back the committed params.yaml (``git show HEAD:params.yaml``): the embedded
default is the file in the repository, never rewritten by a preset of its own.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from maggie.config.params import check_schema, load_params, read_yaml
from maggie.errors import ParamsError
from maggie.files import write_text

MARKER = "# presets applied:"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _round_trip():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a line
    y.indent(mapping=2, sequence=4, offset=2)
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    y.representer.add_representer(float, lambda r, v: r.represent_scalar("tag:yaml.org,2002:float", _float(v)))
    return y


def _float(v: float) -> str:
    """A float as YAML 1.1 readers (PyYAML, DVC's params) read back as a float: ``5.0e-05``, not ``5e-05``."""
    text = repr(v)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exp = text.split("e")
        text = f"{mantissa}.0e{exp}"
    return text


def _merge_in_place(node, over: dict[str, Any]) -> None:
    """Write ``over`` into a ruamel mapping: nested mappings merged, other values replaced."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    for k, v in over.items():
        old = node.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            _merge_in_place(node[k], v)
        elif isinstance(v, list) and isinstance(old, CommentedSeq):
            if not old:  # an empty list is written [] whatever its style: keep it inline
                old.fa.set_flow_style()
            old[:] = v  # in place: the list keeps its flow or block style and its comments
        elif isinstance(v, list):
            seq = CommentedSeq(v)
            seq.fa.set_flow_style()
            node[k] = seq
        elif isinstance(v, dict):
            node[k] = CommentedMap(v)
        else:
            node[k] = v


def preset_path(name: str, presets_dir: str | Path = "presets") -> Path:
    if not NAME.match(name):
        raise ParamsError(f"{name!r}: a preset is named by letters, digits, '-' and '_' (a file in {presets_dir}/)")
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in Path(presets_dir).glob("*.yaml")))
        raise ParamsError(f"{path}: no such preset (available: {available}, default)")
    return path


def apply_preset(name: str, params_path: str | Path = "params.yaml", presets_dir: str | Path = "presets"
                 ) -> dict[str, Any]:
    """Write preset ``name`` into ``params_path`` (comments kept); return the resulting params."""
    params_path = Path(params_path)
    if name == "default":
        return restore_default(params_path)
    path = preset_path(name, presets_dir)
    over = load_params(path, validate=False)
    merged = deep_merge(load_params(params_path, validate=False), over)
    check_schema(merged, f"{params_path} with preset {name}")
    y = _round_trip()
    text = params_path.read_text()
    doc = y.load(text)
    _merge_in_place(doc, over)
    buf = io.StringIO()
    y.dump(doc, buf)
    out = buf.getvalue()
    lines = out.splitlines(keepends=True)
    applied = [line for line in lines if line.startswith(MARKER)]
    names = (applied[0][len(MARKER):].split(",") if applied else [])
    names = [n.strip() for n in names if n.strip()] + [name]
    lines = [line for line in lines if not line.startswith(MARKER)]
    header = f"{MARKER} {', '.join(names)}  (python -m maggie.preset default: back to the committed file)\n"
    write_text(params_path, header + "".join(lines))
    return merged


def restore_default(params_path: Path) -> dict[str, Any]:
    """The committed params.yaml, back in place of a preset-edited one."""
    try:
        text = subprocess.run(["git", "show", f"HEAD:./{params_path.name}"], cwd=params_path.parent or ".",
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ParamsError(f"{params_path}: no committed version to restore (not in a git checkout); "
                          "copy params.yaml from the repository instead") from exc
    if text.startswith(MARKER):
        raise ParamsError(f"{params_path}: the committed version has presets applied ({text.splitlines()[0]}); "
                          "restore it from an earlier commit with git")
    data = read_yaml(text)
    check_schema(data, f"{params_path} (committed)")
    write_text(params_path, text)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="a preset in presets/ (paper, tiny, real, baselines, pretrain), or default")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--presets", default="presets")
    args = ap.parse_args(argv)
    try:
        apply_preset(args.name, args.params, args.presets)
    except ParamsError as exc:
        print(f"maggie.preset: error: {exc}", file=sys.stderr)
        return 2
    print(f"applied preset {args.name} to {args.params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
