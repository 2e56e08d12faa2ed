"""Apply a settings preset to params.yaml: ``python -m maggie.preset paper`` (or ``tiny``, ``default``).

A preset is a partial params file under ``presets/``; it is deep-merged over the current
``params.yaml`` (lists replaced, mappings merged) and the result written back atomically.
``default`` restores the embedded default that ships with the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from maggie.config.params import ParamsError, load_params
from maggie.files import write_text


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_preset(name: str, params_path: str = "params.yaml", presets_dir: str = "presets") -> dict[str, Any]:
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in Path(presets_dir).glob("*.yaml")))
        raise ParamsError(f"{path}: no such preset (available: {available})")
    over = load_params(path)
    merged = over if name == "default" else deep_merge(load_params(params_path), over)
    write_text(params_path, f"# params.yaml with preset '{name}' applied\n" + yaml.safe_dump(merged, sort_keys=False))
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
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
