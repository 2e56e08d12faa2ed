"""Training engine for both stages: ``torchrun ... -m maggie.train --stage image|video``.

One module, two stages.  Settings come from ``params.yaml`` (``train.<stage>``,
``model.<stage>``, ``dataset.train.<stage>``).  The run is exactly resumable: each
step's samples and augmentations are a pure function of (seed, step, position), and
checkpoints carry optimiser, scheduler, scaler and every RNG state, so a run killed
and restarted on CPU produces the same losses as one that never stopped.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import dist
from .checkpointing import init_weights, load_training_state, remove_stale_tmp, save_training_state
from .io_utils import atomic_write, write_json, write_text
from .models import DecoderState, build_model, save_weights
from .models.encoder import ShortcutEncoder
from .models.pretrained_encoder import load_pretrained_encoder, resolve_pretrained
from .objective import method_loss
from .params import ParamsError, load_params, section, stage_settings

log = logging.getLogger("maggie.train")


def step_indices(seed: int, step: int, batch: int, size: int) -> list[tuple[int, int]]:
    """(sample index, sample seed) for every position of a global batch: epochs are seeded permutations."""
    out = []
    for pos in range(batch):
        flat = step * batch + pos
        epoch, offset = divmod(flat, size)
        perm = np.random.default_rng([seed, epoch]).permutation(size)
        out.append((int(perm[offset]), int(np.random.default_rng([seed, step, pos]).integers(2**31))))
    return out


class StepBatches(torch.utils.data.Dataset):
    """Samples of one rank for steps ``start..stop``; item i is the i-th sample of this rank."""

    def __init__(self, dataset, seed: int, start: int, stop: int, batch: int, rank: int, world: int):
        self.dataset, self.seed, self.start, self.batch = dataset, seed, start, batch
        self.rank, self.world = rank, world
        self.per_rank = batch // world
        self.length = (stop - start) * self.per_rank

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        step, pos = divmod(i, self.per_rank)
        index, sample_seed = step_indices(self.seed, self.start + step, self.batch, len(self.dataset))[
            self.rank * self.per_rank + pos]
        return self.dataset.sample(index, sample_seed)


def run_fingerprint(params: dict[str, Any], stage: str) -> str:
    """Hash of the settings a checkpoint belongs to: resuming only continues the same run."""
    import hashlib
    import json

    relevant = {k: params.get(k) for k in ("seed", "data", "dataset", "model")}
    # The code too: after a change to the network, losses or loaders a rerun starts afresh
    # instead of "resuming" a finished run of other code.
    src = Path(__file__).resolve().parent
    code = sorted([*src.glob("models/*.py"), src / "train.py", src / "objective.py", src / "data" / "datasets.py",
                   src / "data" / "transforms.py"])
    relevant["code"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in code}
    relevant["train"] = {k: v for k, v in section(params, f"train.{stage}").items() if k not in ("device",)}
    if relevant["train"].get("init") == "image":
        init = Path(section(params, "train.image")["out_dir"]) / "best.safetensors"
        if init.exists():
            relevant["init_sha"] = hashlib.sha256(init.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_dataset(params: dict[str, Any], stage: str):
    from .data.datasets import build_train_dataset

    return build_train_dataset(params, stage)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def precision_setup(requested: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if requested == "fp32" or (requested == "auto" and device.type != "cuda"):
        return None, False
    if requested == "bf16" or (requested == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    if requested in ("fp16", "auto"):
        if device.type != "cuda":
            raise ParamsError("train.*.precision fp16 needs a CUDA device; use fp32 or bf16 on this machine")
        return torch.float16, True
    raise ParamsError(f"train.*.precision must be auto, fp32, fp16 or bf16, got {requested!r}")


class CurveWriter:
    """Appends rows to a CSV (for ``dvc plots``), rewriting the file atomically each time."""

    def __init__(self, path: Path, fields: list[str], keep: bool):
        self.path, self.fields = path, fields
        self.rows: list[dict[str, Any]] = []
        if keep and path.exists():
            with path.open() as f:
                self.rows = list(csv.DictReader(f))

    def add(self, row: dict[str, Any]) -> None:
        step = row["step"]
        self.rows = [r for r in self.rows if int(r["step"]) < step] + [row]
        lines = [",".join(self.fields)] + [",".join(str(r.get(k, "")) for k in self.fields) for r in self.rows]
        write_text(self.path, "\n".join(lines) + "\n")


def make_wandb(params: dict[str, Any], stage: str, enabled: bool):
    if not enabled:
        return None
    cfg = params.get("wandb", {}) or {}
    mode = cfg.get("mode", "offline")
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; logging to files only")
        return None
    (Path("outputs") / "wandb").mkdir(parents=True, exist_ok=True)
    return wandb.init(project=cfg.get("project", "maggie"), entity=cfg.get("entity") or None, mode=mode,
                      dir=str(Path("outputs") / "wandb"), name=f"{stage}", config=params, reinit=True)


def matte_preview(batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> np.ndarray:
    """Image | guidance | prediction | truth for the first sample, instances colour-coded."""
    from .visualize import colour_mattes, denormalise

    img = denormalise(batch["image"][0, 0])
    row = [img, colour_mattes(batch["mask"][0, 0].float().cpu().numpy()),
           colour_mattes(out["alpha"][0, 0].detach().float().cpu().numpy()),
           colour_mattes(batch["alpha"][0, 0].float().cpu().numpy())]
    return np.concatenate(row, axis=1)


def train(stage: str, params_path: str, max_iter_override: int | None = None,
          out_dir_override: str | None = None, method: str = "maggie") -> dict[str, Any]:
    from .methods import NETWORK, has_video_training, method_params

    params = method_params(load_params(params_path), method)
    if method != NETWORK and stage == "video" and not has_video_training(params, method):
        return reuse_image_weights(params, method)
    mset, tset = stage_settings(params, stage)
    if max_iter_override is not None:
        tset.max_iter = max_iter_override
    if out_dir_override is not None:
        tset.out_dir = out_dir_override
    rt = dist.setup(tset.device)
    logging.basicConfig(level=logging.INFO if rt.is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if tset.batch_size % rt.world_size:
        raise ParamsError(f"train.{stage}.batch_size ({tset.batch_size}) must be divisible by the number of "
                          f"processes ({rt.world_size})")
    frames = 1 if stage == "image" else section(params, "dataset.train.video").get("clip_length", 3)
    if tset.batch_size // rt.world_size * frames < 2:
        raise ParamsError(f"train.{stage}.batch_size ({tset.batch_size}) gives each of the {rt.world_size} "
                          f"processes fewer than 2 frames; batch norm needs at least 2")
    out_dir = Path(tset.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir)
    torch.manual_seed(tset.seed)
    np.random.seed(tset.seed)

    dataset = build_dataset(params, stage)
    model = build_model(mset.arch, max_inst=mset.max_inst, warmup_detail_iter=mset.warmup_detail_iter,
                        refine_mode=mset.refine_mode, routing_init=mset.routing_init,
                        guidance_stem_init=mset.guidance_stem_init)
    pretrained = resolve_pretrained((mset.encoder_args or {}).get("pretrained"))
    if pretrained is not None:
        if not isinstance(getattr(model, "encoder", None), ShortcutEncoder):
            raise ParamsError(f"model.{stage}.encoder_args.pretrained: {mset.arch} has no ResNet-34 encoder to load")
        load_pretrained_encoder(model.encoder, pretrained)
    if tset.init:
        source = str(Path(section(params, "train.image")["out_dir"]) / "best.safetensors") \
            if tset.init == "image" else tset.init
        init_weights(model, source)
    model.to(rt.device)
    if rt.distributed and rt.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    core = model
    optimizer = torch.optim.AdamW(model.parameters(), lr=tset.lr, betas=tuple(tset.betas),
                                  weight_decay=tset.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: warmup_cosine(i, tset.warmup_iters, tset.max_iter))
    amp_dtype, use_scaler = precision_setup(tset.precision, rt.device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    ckpt_dir = out_dir / "ckpt"
    fingerprint = run_fingerprint(params, stage)
    state = load_training_state(ckpt_dir, "last", core, optimizer, scheduler, scaler, fingerprint)
    start = state["step"] if state else 0
    best = state["extra"].get("best_mad", math.inf) if state else math.inf
    if rt.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, find_unused_parameters=True)

    loader = torch.utils.data.DataLoader(
        StepBatches(dataset, tset.seed, start, tset.max_iter, tset.batch_size, rt.rank, rt.world_size),
        batch_size=tset.batch_size // rt.world_size, shuffle=False, num_workers=tset.num_workers,
        persistent_workers=False, drop_last=False,
        # Its own generator: iterating must not draw from the global RNG that a resume restores.
        generator=torch.Generator().manual_seed(tset.seed))
    curve = CurveWriter(out_dir / "train_curve.csv", ["step", "lr", "loss", "loss_rec", "loss_lap", "loss_grad",
                                                      "loss_atten", "loss_dtSSD", "loss_temp", "loss_sum_one",
                                                      "loss_os8_bce"],
                         keep=start > 0)
    val_curve = CurveWriter(out_dir / "val_curve.csv", ["step", "MAD", "MSE", "SAD", "mask_MAD"], keep=start > 0)
    run = make_wandb(params, stage, rt.is_main)
    log.info("stage %s: %d samples, steps %d..%d, batch %d on %d x %s", stage, len(dataset), start, tset.max_iter,
             tset.batch_size, rt.world_size, rt.device)

    model.train()
    losses_log: list[float] = []
    bar = tqdm(total=tset.max_iter, initial=start, disable=not rt.is_main, desc=f"train {stage}", unit="step")
    t0 = time.time()
    step = start
    for batch in loader:
        batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
        step += 1
        with torch.autocast(rt.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            gt = batch["alpha"].flatten(0, 1)
            out = model(batch["image"], batch["mask"], state=DecoderState(iteration=step, gt_alpha=gt))
            losses = method_loss(out, batch, mset)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(losses["total"]).backward()
            scaler.unscale_(optimizer)
        else:
            losses["total"].backward()
        if tset.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tset.clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        losses_log.append(float(losses["total"].detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses_log[-1]:.4f}")

        if rt.is_main and (step % tset.log_iter == 0 or step == tset.max_iter):
            row = {"step": step, "lr": f"{scheduler.get_last_lr()[0]:.3e}", "loss": f"{losses_log[-1]:.6f}"}
            row.update({k: f"{float(v.detach()):.6f}" for k, v in losses.items()
                        if k.startswith("loss_") and k in curve.fields})
            curve.add(row)
            log.info("step %d/%d loss %.4f lr %s (%.2f s/step)", step, tset.max_iter, losses_log[-1], row["lr"],
                     (time.time() - t0) / max(step - start, 1))
            if run is not None:
                run.log({f"train/{k}": float(v) for k, v in row.items() if k != "step"}, step=step)
        if run is not None and step % tset.vis_iter == 0:
            import wandb

            run.log({"train/preview": wandb.Image(matte_preview(batch, out))}, step=step)

        if step % tset.val_iter == 0 or step == tset.max_iter:
            metrics = validate(core, params, stage, tset, rt)
            if rt.is_main:
                val_curve.add({"step": step, **{k: f"{metrics[k]:.6f}" for k in ("MAD", "MSE", "SAD", "mask_MAD")}})
                log.info("validation at step %d: MAD %.3f (mask as alpha %.3f)", step, metrics["MAD"],
                         metrics["mask_MAD"])
                if run is not None:
                    run.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
                if metrics["MAD"] < best:
                    best = metrics["MAD"]
                    save_weights(core, out_dir / "best.safetensors", {"step": step, "val_MAD": best})
            model.train()
        if rt.is_main and (step % tset.ckpt_iter == 0 or step == tset.max_iter):
            save_training_state(ckpt_dir, "last", core, optimizer, scheduler, scaler, step,
                                {"best_mad": best, "fingerprint": fingerprint})
        dist.barrier()
    bar.close()

    summary = {"stage": stage, "steps": step, "final_loss": losses_log[-1] if losses_log else None,
               "best_val_MAD": None if math.isinf(best) else best,
               "seconds": round(time.time() - t0, 1), "processes": rt.world_size, "device": str(rt.device)}
    summary["rank_weight_checksums"] = weight_checksums(core)
    if rt.is_main:
        if not (out_dir / "best.safetensors").exists():
            save_weights(core, out_dir / "best.safetensors", {"step": step})
        write_json(out_dir / "train_summary.json", summary)
        if run is not None:
            run.finish()
    dist.teardown()
    return summary


def reuse_image_weights(params: dict[str, Any], method: str) -> dict[str, Any]:
    """A baseline without video training: its video model is its image model, run frame by frame."""
    import shutil

    src = Path(section(params, "train.image")["out_dir"]) / "best.safetensors"
    out_dir = Path(section(params, "train.video")["out_dir"])
    if not src.exists():
        raise FileNotFoundError(f"{src}: {method} has no image weights yet; run its image stage first")
    (out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "best.safetensors", lambda tmp: shutil.copyfile(src, tmp))
    summary = {"stage": "video", "steps": 0, "method": method,
               "note": "no video training (baselines.<name>.video is null): the image weights, frame by frame"}
    write_json(out_dir / "train_summary.json", summary)
    log.info("%s: no video training; %s reused for video", method, src)
    return summary


@torch.no_grad()
def weight_checksums(model: nn.Module) -> list[float]:
    """Sum of every parameter of every rank (gathered): equal values mean the ranks are in sync."""
    total = torch.zeros(1, dtype=torch.float64, device=next(model.parameters()).device)
    for p in model.parameters():
        total += p.detach().double().sum()
    if dist.torch_dist_ready():
        import torch.distributed as tdist

        gathered = [torch.zeros_like(total) for _ in range(tdist.get_world_size())]
        tdist.all_gather(gathered, total)
        return [float(g) for g in gathered]
    return [float(total)]


@torch.no_grad()
def validate(model, params: dict[str, Any], stage: str, tset, rt) -> dict[str, float]:
    """MAD/MSE/SAD on the first ``val_count`` samples of the validation set (the paper's val metrics)."""
    from .evaluate import evaluate_images, evaluate_videos

    model.eval()
    evaluate = evaluate_images if stage == "image" else evaluate_videos
    result = evaluate(model, params, limit=tset.val_count, device=rt.device, names=("MAD", "MSE", "SAD"),
                      validation=True)
    return {**result["maggie"], "mask_MAD": result["mask_as_alpha"]["MAD"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["image", "video"], required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--max-iter", type=int, default=None, help="override train.<stage>.max_iter (e.g. to stop early)")
    ap.add_argument("--out-dir", default=None, help="override train.<stage>.out_dir")
    ap.add_argument("--method", default="maggie", help="maggie, or a baseline named under 'baselines' in params.yaml")
    args = ap.parse_args(argv)
    try:
        train(args.stage, args.params, args.max_iter, args.out_dir, args.method)
    except (ParamsError, FileNotFoundError, ValueError) as exc:
        print(f"maggie.train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
