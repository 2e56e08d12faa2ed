"""What each change of the embedded default does: short runs from scratch, one change added at a time.

    python benchmarks/ablation.py                 # every row not yet in benchmarks/ablation.json
    python benchmarks/ablation.py --steps 600 --only guidance_full_res

Each row trains the image network from scratch for ``--steps`` steps with the pipeline's own engine
(``maggie.engine.loop.train``) on params.yaml with the row's overrides, then evaluates it on all 20
image benchmarks (2 subsets x 10 mask sources, 16 images each) and records the mean MAD per subset
next to the guidance mask's, the ratio of the two and in how many of the 10 sources it beats the
mask.  Rows build on each other, from the reference's recipe to today's default (a last row evaluates the
shipped warm start with one evaluation setting changed, since a network trained for minutes is no guide to
what the setting does to a trained one); the data of each
row are made once under ``--work`` (the test sets do not depend on the training pools).  Results go
to ``benchmarks/ablation.json`` (a row is skipped when already there) and ``benchmarks/ablation.md``.
The warm start's and the default run's rows come from ``pretrain/warm_start.json`` and
``benchmarks/default_run_metrics.json`` when those exist.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maggie.config.params import load_params  # noqa: E402
from maggie.config.presets import deep_merge  # noqa: E402

# The training data of the first rows, and of the pretrain preset's phase 1 (the default's own is larger, with
# heavier occlusion and more JPEG/noise augmentation): pinned, so that recorded rows stay reproducible.
REFERENCE_AUG = {"dataset": {"train": {"image": {"add_noise_p": 0.3, "jpeg_p": 0.1}}}}
OLD_DATA = deep_merge({"data": {"bank": {"figures": {"train": 48}, "backgrounds": {"train": 32}},
                                "image_train": {"count": 400, "min_visible": 0.7}}}, REFERENCE_AUG)
PHASE1_DATA = deep_merge({"data": {"bank": {"figures": {"train": 200}, "backgrounds": {"train": 96}},
                                   "image_train": {"count": 2000, "min_visible": 0.7}}}, REFERENCE_AUG)
NO_MERGE = {"test": {"image": {"merge_duplicate_masks": False}}}
REFERENCE = {
    "dataset": {"train": {"image": {"simulated_guidance_p": 0.0, "quantise_masks": True}}},
    "test": {"image": {"quantise_masks": True, "merge_duplicate_masks": False}},
    "model": {"image": {"routing_init": False, "guidance_stem_init": False, "loss_os8_bce_w": 0.0}},
}
FULL_RES = {"dataset": {"train": {"image": {"quantise_masks": False}}}, "test": {"image": {"quantise_masks": False}}}
SIMULATED = {"dataset": {"train": {"image": {"simulated_guidance_p": 0.8}}}}
WARM = "warm_start"  # rows that evaluate the shipped warm start (pretrain/) instead of training
# (name, what the row adds, overrides of params.yaml, the row whose weights it evaluates instead of training)
ROWS = [
    ("reference_recipe", "the reference's guidance noise and OS8 protocol, no init aids (the old default)",
     [OLD_DATA, REFERENCE], None),
    ("guidance_full_res", "+ guidance at full resolution in training and test (no OS8 quantisation)",
     [OLD_DATA, REFERENCE, FULL_RES], None),
    ("simulated_guidance", "+ training guidance from the simulated segmenter (80% of samples)",
     [OLD_DATA, REFERENCE, FULL_RES, SIMULATED], None),
    ("init_aids_bce", "+ routing and guidance-stem initialisation, BCE on the OS8 logits",
     [OLD_DATA, NO_MERGE], None),
    ("merge_duplicates", "+ identical masks run as one instance (evaluation only: the row above's network)",
     [OLD_DATA], "init_aids_bce"),
    ("larger_pools", "+ 200 training figures, 96 backgrounds, 2000 images (the pretrain preset's phase 1)",
     [PHASE1_DATA], None),
    ("default_data", "+ 400 figures, 192 backgrounds, 4000 images, up to 70% occlusion, JPEG and noise half the "
     "time (today's default data, from scratch)", [], None),
    ("warm_start_no_merge", "the warm start with identical masks run as separate instances (evaluation only)",
     [NO_MERGE], WARM),
]


def row_params(overrides: list[dict], steps: int, work: Path, name: str) -> dict:
    params = load_params(REPO / "params.yaml")
    for o in overrides:
        params = deep_merge(params, o)
    data_key = "old" if OLD_DATA in overrides else "new"
    params = deep_merge(params, {
        "data": {"root": str(work / f"data_{data_key}")},
        # from scratch with the recipe of the long pretrain run (not the default's fine-tuning settings)
        "train": {"image": {"max_iter": steps, "val_iter": steps, "ckpt_iter": steps, "log_iter": 50, "lr": 4e-4,
                            "warmup_iters": 30, "init": "", "out_dir": str(work / name)}},
        "model": {"image": {"warmup_detail_iter": 30}},
        "wandb": {"mode": "disabled"},
    })
    return params


def make_data(params_path: Path) -> None:
    from maggie.data.fetch.pull import pull
    from maggie.data.synth.config import load_data_config
    from maggie.data.synth.datasets import synthesize

    params = load_params(params_path)
    root = Path(params["data"]["root"])
    if (root / "I-HIM50K").is_dir() and (root / "HIM2K_M-HIM2K").is_dir():
        return
    pull(params)
    for kind in ("image_train", "image_test"):
        synthesize(kind, load_data_config(params_path))


def evaluate_all(params: dict, weights: Path) -> dict:
    from maggie.evaluation.benchmarks import against_mask
    from maggie.models import load_model

    out = against_mask(load_model(weights), params)
    for entry in out.values():  # rounded for the table
        entry.update(MAD=round(entry["MAD"], 1), mask_MAD=round(entry["mask_MAD"], 1), ratio=round(entry["ratio"], 3))
    return out


def run_row(name: str, description: str, overrides: list[dict], steps: int, work: Path,
            weights_of: str | None = None) -> dict:
    from maggie.engine.loop import train

    params = row_params(overrides, steps, work, name)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    make_data(path)
    row: dict = {"name": name, "description": description, "steps": steps}
    if weights_of is None:
        t0 = time.time()
        summary = train("image", str(path))
        row.update(train_seconds=round(time.time() - t0), s_per_step=round(summary["seconds"] / steps, 2))
    if weights_of == WARM:
        weights = REPO / "pretrain" / "maggie_default_image.safetensors"
        row["steps"] = json.loads((REPO / "pretrain" / "warm_start.json").read_text())["image"]["steps"]
    else:
        weights = work / (weights_of or name) / "ckpt" / "last.safetensors"
    return {**row, **evaluate_all(params, weights)}


def render(rows: list[dict], extra: list[dict]) -> str:
    lines = ["# Ablation of the embedded default", "",
             "Mean MAD over the 10 mask sources of each image subset (the reference code's scale), next to the",
             "guidance mask used as the alpha; ratio = network / mask (lower is better, < 1 beats the mask); wins =",
             "mask sources (of 10) where the network's MAD is lower.  Rows from `python benchmarks/ablation.py`",
             "train from scratch for the steps given; each adds one change to the row above.  s/step is the",
             "wall-clock time of the row's training (rows run beside other work on the same two cores are slower).",
             "",
             "| row | change | steps | in_dist MAD (mask) | ratio | wins | held_out MAD (mask) | ratio | wins "
             "| s/step |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows + extra:
        i, h = r["in_dist"], r["held_out"]
        lines.append(f"| {r['name']} | {r['description']} | {r['steps']} | {i['MAD']:.0f} ({i['mask_MAD']:.0f}) | "
                     f"{i['ratio']:.2f} | {i['wins']} | {h['MAD']:.0f} ({h['mask_MAD']:.0f}) | {h['ratio']:.2f} | "
                     f"{h['wins']} | {r.get('s_per_step', '')} |")
    return "\n".join(lines) + "\n"


def extra_rows() -> list[dict]:
    """The warm start's and the default run's figures, when they have been recorded."""
    rows = []
    warm = REPO / "pretrain" / "warm_start.json"
    if warm.is_file():
        w = json.loads(warm.read_text())
        rows.append({"name": "warm_start", "description": f"the shipped warm start ({w['image']['steps']} steps of "
                     "the pretrain and pretrain2 presets), no further training", "steps": w["image"]["steps"],
                     **{s: w["image"]["metrics"][s] for s in ("in_dist", "held_out")}})
    run = REPO / "benchmarks" / "default_run_metrics.json"
    if run.is_file():
        m = json.loads(run.read_text())
        if "headline" in m:
            steps = load_params(REPO / "params.yaml")["train"]["image"]["max_iter"]
            rows.append({"name": "default_run", "description": "`dvc repro` of the default: the warm start and "
                         "its own training", "steps": f"+{steps}",
                         **{s: m["headline"]["image"][s] for s in ("in_dist", "held_out")}})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--work", default="/tmp/maggie_ablation")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "ablation.json"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--render", action="store_true", help="only rewrite ablation.md from ablation.json")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.is_file() else []
    for name, description, overrides, weights_of in [] if args.render else ROWS:
        if (args.only and name not in args.only) or any(
                r["name"] == name and (r["steps"] == args.steps or weights_of == WARM) for r in done):
            continue
        row = run_row(name, description, copy.deepcopy(overrides), args.steps, Path(args.work), weights_of)
        done = [r for r in done if not (r["name"] == name and r["steps"] == row["steps"])] + [row]
        order = [r[0] for r in ROWS]
        done.sort(key=lambda r: (r["steps"], order.index(r["name"]) if r["name"] in order else 99))
        out.write_text(json.dumps(done, indent=1) + "\n")
        out.with_suffix(".md").write_text(render(done, extra_rows()))
        print(f"{name}: in_dist ratio {row['in_dist']['ratio']:.2f}, held_out {row['held_out']['ratio']:.2f}",
              flush=True)
    out.with_suffix(".md").write_text(render(done, extra_rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
