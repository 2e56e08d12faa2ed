"""Make the embedded default's warm start from a pretrain run: float16 weights, checksums, provenance, metrics.

    python -m maggie.preset pretrain
    torchrun --standalone -m maggie.stages.train_image --params params.yaml   # phase 1: hours on CPU
    python -m maggie.preset default && python -m maggie.preset pretrain2
    torchrun --standalone -m maggie.stages.train_image --params params.yaml   # phase 2, from phase 1's last
    torchrun --standalone -m maggie.stages.train_video --params params.yaml
    python -m maggie.preset default
    python -m maggie.engine.warm_start --image models/pretrain/image2/ckpt/last.safetensors --after-steps 12000 \\
        --video models/pretrain/video/ckpt/last.safetensors --out pretrain

writes ``pretrain/maggie_default_image.safetensors`` (the image network), ``maggie_default_temporal.safetensors``
(only the video network's temporal modules, so that the default's video stage takes everything else from
its own image stage), ``SHA256SUMS`` (checked whenever training starts from them) and ``warm_start.json``:
the command, the code commit and settings they were trained with, and their metrics on the default's 20
image benchmarks and 3 video splits, made with the evaluation code the report uses.  The last weights of a
run are exported, not the best by validation MAD: the warm start must not be selected on test data.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from maggie.config.params import load_params
from maggie.errors import USER_ERRORS
from maggie.files import atomic_write, sha256_file, stable_hash, write_json, write_text
from maggie.models import load_model
from maggie.models.registry import VIDEO_ONLY_PREFIXES
from maggie.models.weights import read_state_dict

log = logging.getLogger("maggie.warm_start")
IMAGE_FILE = "maggie_default_image.safetensors"
TEMPORAL_FILE = "maggie_default_temporal.safetensors"


def export_fp16(source: Path, dest: Path, keep=lambda key: True, arch: str | None = None) -> dict[str, Any]:
    """The tensors of ``source`` that ``keep`` selects, float tensors in float16, with the source's metadata
    (its architecture replaced by ``arch`` if given: the image part of a video network is an image network)."""
    import json

    sd, info = read_state_dict(source)
    out = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items() if keep(k)}
    meta_info = dict(info)
    if arch is not None and "arch" in info:
        meta_info["arch"] = arch
        if isinstance(info.get("config"), dict):
            meta_info["config"] = {**info["config"], "arch": arch}
    meta = {"maggie": json.dumps({**meta_info, "exported_from": str(source), "dtype": "float16"})}
    atomic_write(dest, lambda tmp: save_file(out, str(tmp), metadata=meta))
    return info


def image_metrics(weights: Path, params: dict[str, Any]) -> dict[str, Any]:
    from maggie.evaluation.benchmarks import against_mask

    return against_mask(load_model(weights), params)


def video_metrics(image: Path, temporal: Path, params: dict[str, Any]) -> dict[str, Any]:
    from maggie.engine.checkpoints import video_network_from
    from maggie.evaluation.benchmarks import video_against_mask

    return video_against_mask(video_network_from(image, temporal), params)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


COMMAND = ("python -m maggie.preset pretrain && torchrun --standalone -m maggie.stages.train_image --params params.yaml"
           " && python -m maggie.preset default && python -m maggie.preset pretrain2 && torchrun --standalone -m "
           "maggie.stages.train_image --params params.yaml && torchrun --standalone -m maggie.stages.train_video "
           "--params params.yaml && python -m maggie.preset default && python -m maggie.preset pretrain3 && "
           "torchrun --standalone -m maggie.stages.train_video --params params.yaml && python -m maggie.preset default "
           "&& python -m maggie.engine.warm_start --image models/pretrain/video3/ckpt/last.safetensors --video "
           "models/pretrain/video3/ckpt/last.safetensors --after-steps 13500 --out pretrain && python -m maggie.preset "
           "pretrain5 && torchrun --standalone -m maggie.stages.train_video --params params.yaml")


def make_warm_start(image: Path, video: Path | None, out: Path, params_path: str, trained_with: str | None,
                    after_steps: int = 0) -> dict:
    """``after_steps``: image steps of the run(s) the exported image run started from (phase 1 for phase 2)."""
    params = load_params(params_path)
    out.mkdir(parents=True, exist_ok=True)
    # Both files and their checksums first: the measurements load them through the checked loader, which must
    # not meet the checksums of a warm start being replaced.
    # The image file may come from a video run that trained the whole network (phase 3): its image part.
    info = export_fp16(image, out / IMAGE_FILE, keep=lambda k: not k.startswith(VIDEO_ONLY_PREFIXES),
                       arch="maggie_image")
    from_video = info.get("arch") == "maggie_video"
    vinfo = None if video is None else export_fp16(video, out / TEMPORAL_FILE,
                                                   keep=lambda k: k.startswith(VIDEO_ONLY_PREFIXES))
    sums = {name: sha256_file(out / name) for name in [IMAGE_FILE] + ([] if video is None else [TEMPORAL_FILE])}
    write_text(out / "SHA256SUMS", "".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    steps = info.get("step")
    record: dict[str, Any] = {
        "command": COMMAND,
        "made_by": f"python -m maggie.engine.warm_start (code {git_commit()})",
        "trained_with": trained_with or "the pretrain, pretrain2 and pretrain3 presets over this commit's params.yaml",
        "seeds": {"data": params["data"]["seed"], "image": params["train"]["image"]["seed"],
                  "video": params["train"]["video"]["seed"]},
        "data": "the default's training pools only (I-HIM50K and V-HIM2K5 of data.bank's train pool); the test "
                "sets were read only to measure these metrics, never for training or checkpoint selection",
        "data_settings_hash": stable_hash({"bank": params["data"]["bank"], "image_train": params["data"]["image_train"],
                                           "video_train": params["data"]["video_train"]}),
        "image": {"file": IMAGE_FILE, "source": str(image), "metrics": image_metrics(out / IMAGE_FILE, params)},
    }
    if from_video:  # image steps before, then whole-network video steps
        record["image"].update(steps=after_steps, video_steps=steps)
    else:
        record["image"].update(steps=after_steps + steps if steps is not None else None,
                               phases=[after_steps, steps] if after_steps else [steps])
    if vinfo is not None:
        record["video"] = {"file": TEMPORAL_FILE, "steps": vinfo.get("step"), "source": str(video),
                           "metrics": video_metrics(out / IMAGE_FILE, out / TEMPORAL_FILE, params)}
    record["sha256"] = sums
    write_json(out / "warm_start.json", record)
    return record


def remeasure(out: Path, params_path: str) -> dict:
    """The shipped warm start's metrics again, under this checkout's evaluation settings (the files and their
    checksums stay; ``measured_with`` says which code measured them), so the report compares like with like
    after the evaluation protocol changes."""
    params = load_params(params_path)
    record = json.loads((out / "warm_start.json").read_text())
    record["image"]["metrics"] = image_metrics(out / record["image"]["file"], params)
    if record.get("video"):
        record["video"]["metrics"] = video_metrics(out / record["image"]["file"], out / record["video"]["file"], params)
    record["measured_with"] = f"python -m maggie.engine.warm_start --remeasure (code {git_commit()})"
    write_json(out / "warm_start.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--remeasure", action="store_true",
                    help="measure the warm start in --out again with this checkout's evaluation (no export)")
    ap.add_argument("--image", default=None, help="the pretrain image run's weights (its ckpt/last.safetensors), or "
                                                   "a video run's that trained the whole network (its image part)")
    ap.add_argument("--video", default=None, help="the pretrain video run's weights (its ckpt/last.safetensors)")
    ap.add_argument("--out", default="pretrain")
    ap.add_argument("--params", default="params.yaml", help="the default's params (the test sets measured)")
    ap.add_argument("--trained-with", default=None, help="a note on the code and settings of the pretrain run")
    ap.add_argument("--after-steps", type=int, default=0,
                    help="image steps of the run(s) the exported run started from (phase 1's, for phase 2)")
    args = ap.parse_args(argv)
    if not args.remeasure and not args.image:
        ap.error("--image is required (or --remeasure)")
    try:
        with torch.no_grad():   # not a global switch: main() is also called in-process (tests)
            if args.remeasure:
                remeasure(Path(args.out), args.params)
            else:
                make_warm_start(Path(args.image), Path(args.video) if args.video else None, Path(args.out),
                                args.params, args.trained_with, args.after_steps)
    except USER_ERRORS as exc:
        print(f"maggie.engine.warm_start: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
