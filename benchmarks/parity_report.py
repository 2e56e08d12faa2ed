"""Differences between our network and the authors' code on their parity fixtures, as figures.

    python benchmarks/parity_report.py [--fixtures ../shared/parity] [--out benchmarks/parity.json]

The tests assert the tolerance; this prints the actual mean / max absolute differences and
the share of values off by more than 1e-2, per output, for both refinement paths, and for the
baselines whose fixtures are in ``<fixtures>/baselines`` (MGM, MGM*, MGM+TCVOM, SparseMat), and
InstMatt, whose fixture was made from the authors' ``nowsyn/InstMatt`` by
``tests/fixtures/instmatt/make_fixture.py`` (``--instmatt``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from maggie.files import write_json
from maggie.models import load_model

OUTPUTS = {"alpha": "out_refined_masks", "alpha_os8": "out_alpha_os8", "alpha_os4": "out_alpha_os4",
           "alpha_os1": "out_alpha_os1", "detail_mask": "out_detail_mask"}
VIDEO_OUTPUTS = {"temp_alpha": "out_temp_alpha", "diff_forward": "out_diff_pred_forward",
                 "diff_backward": "out_diff_pred_backward"}


BASELINES = {"mgm": "mgm_3inst.npz", "mgm_stacked": "mgm_stacked_3inst.npz", "mgm_tcvom": "mgm_tcvom_2inst_3f.npz",
             "sparsemat": "sparsemat_2inst.npz"}
BASELINE_OUTPUTS = {k: v for k, v in OUTPUTS.items() if k != "detail_mask"}


def baseline_weights(fixtures: Path, arch: str, shared: dict) -> dict:
    """A baseline's state dict: its own tensors, the rest from the MaGGIe fixture (as its README says)."""
    keys = json.loads((fixtures / "baselines" / f"{arch}_keys.json").read_text())
    own = load_file(str(fixtures / "baselines" / f"{arch}_own_weights.safetensors"))
    return {k: own[k] if k in own else shared[k] for k in keys}


def instmatt_case(fixtures: Path, instmatt_dir: Path) -> tuple[dict, dict, Any]:
    """InstMatt's state dict, its fixture case, and the fixture's ``refiner_inputs`` builder.

    The network shares MGM's tensors (``<fixtures>/baselines``); the ones whose shapes differ and
    the refiner's are in the fixture folder, as its ``make_fixture.py`` derived them."""
    keys = json.loads((instmatt_dir / "instmatt_keys.json").read_text())
    own = load_file(str(instmatt_dir / "instmatt_own_weights.safetensors"))
    mgm = baseline_weights(fixtures, "mgm", load_file(str(fixtures / "maggie_image_weights.safetensors")))
    sd = {k: (own[k] if k in own else mgm[k]).float() for k in keys}
    spec = importlib.util.spec_from_file_location("instmatt_fixture", instmatt_dir / "make_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sd, dict(np.load(instmatt_dir / "instmatt_4inst.npz")), module.refiner_inputs


def instmatt_report(fixtures: Path, instmatt_dir: Path) -> dict:
    sd, case, refiner_inputs = instmatt_case(fixtures, instmatt_dir)
    model = load_model(sd)
    with torch.no_grad():
        pred = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
        masks = torch.from_numpy(case["refiner_masks"]).float()
        tri, feat = refiner_inputs(masks)
        image = torch.from_numpy(case["refiner_image"]).float().expand(len(masks), -1, -1, -1)
        refined = model.refiner.refine(image, tri, feat)
    return {"instmatt/alpha_os8": _diff(pred["alpha_os8"][0, 0], case["out_alpha_os8"][:, 0]),
            "instmatt/trimatte": _diff(pred["trimatte"][0, 0], case["out_final"]),
            "instmatt/refiner": _diff(refined, case["refiner_out"])}


def _diff(pred: torch.Tensor, ref: np.ndarray) -> dict:
    d = np.abs(pred.numpy() - ref)
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max()), "share_over_1e-2": float((d > 1e-2).mean())}


def report(fixtures: Path) -> dict:
    image_sd = load_file(str(fixtures / "maggie_image_weights.safetensors"))
    video_sd = {**image_sd, **load_file(str(fixtures / "maggie_video_extra_weights.safetensors"))}
    cases = {"image": (image_sd, "image_3inst.npz", OUTPUTS),
             "video": (video_sd, "video_2inst_3f.npz", {**OUTPUTS, **VIDEO_OUTPUTS})}
    out: dict = {}
    for kind, (sd, case_file, pairs) in cases.items():
        case = np.load(fixtures / case_file)
        for mode in ("sparse", "dense"):
            model = load_model(sd, refine_mode=mode)
            with torch.no_grad():
                pred = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
            for ours, ref in pairs.items():
                out[f"{kind}/{mode}/{ours}"] = _diff(pred[ours], case[ref])
    for arch, case_file in BASELINES.items():
        if not (fixtures / "baselines" / case_file).exists():
            continue
        case = np.load(fixtures / "baselines" / case_file)
        model = load_model(baseline_weights(fixtures, arch, image_sd))
        with torch.no_grad():
            pred = model(torch.from_numpy(case["image"]), torch.from_numpy(case["mask"]))
        for ours, ref in BASELINE_OUTPUTS.items():
            if ref in case:  # SparseMat has only the final matte
                out[f"{arch}/{ours}"] = _diff(pred[ours], case[ref])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default="../shared/parity")
    ap.add_argument("--instmatt", default="tests/fixtures/instmatt", help="InstMatt's fixture folder")
    ap.add_argument("--out", default="benchmarks/parity.json")
    args = ap.parse_args(argv)
    fixtures = Path(args.fixtures)
    if not (fixtures / "image_3inst.npz").exists():
        print(f"parity_report: error: {fixtures}: no parity fixtures here", file=sys.stderr)
        return 2
    rows = report(fixtures)
    if (Path(args.instmatt) / "instmatt_4inst.npz").exists():
        rows.update(instmatt_report(fixtures, Path(args.instmatt)))
    for name, r in rows.items():
        print(f"{name:32s} mean {r['mean_abs']:.2e}  max {r['max_abs']:.2e}  >1e-2 {r['share_over_1e-2']:.4%}")
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
