"""The training loop of both stages (``train_image``, ``train_video`` and the baselines').

Settings come from ``params.yaml`` (``train.<stage>``, ``model.<stage>``, ``dataset.train.<stage>``,
overlaid for a baseline by ``config.methods``).  The run is exactly resumable: batches are a pure
function of (seed, step, position) and checkpoints carry optimiser, scheduler, scaler and every
RNG state, so a run killed and restarted on CPU produces the same losses as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maggie.config.methods import NETWORK, best_weights, has_video_training, init_sources, method_params
from maggie.config.params import ParamsError, load_params, section, stage_settings
from maggie.engine import distributed as dist
from maggie.engine.build import (
    build_dataset,
    build_network,
    build_optimizer,
    make_loader,
    precision_setup,
    select_trainable,
    train_mode,
)
from maggie.engine.checkpoints import (
    init_weights,
    load_training_state,
    run_fingerprint,
    save_training_state,
)
from maggie.engine.run_log import TRAIN_FIELDS, VAL_FIELDS, CurveWriter, make_wandb, matte_preview
from maggie.engine.validate import validate
from maggie.files import copy_file, remove_stale_partials, write_json
from maggie.models import DecoderState, save_weights
from maggie.models.registry import training_objective
from maggie.runtime import keep_freed_memory

log = logging.getLogger("maggie.engine")


def check_batch(stage: str, tset, params: dict[str, Any], world: int) -> None:
    if tset.batch_size % world:
        raise ParamsError(f"train.{stage}.batch_size ({tset.batch_size}) must be divisible by the number of "
                          f"processes ({world})")
    frames = 1 if stage == "image" else section(params, "dataset.train.video")["clip_length"]
    if tset.batch_size // world * frames < 2:
        raise ParamsError(f"train.{stage}.batch_size ({tset.batch_size}) gives each of the {world} "
                          f"processes fewer than 2 frames; batch norm needs at least 2")


def train(stage: str, params_path: str, max_iter_override: int | None = None,
          out_dir_override: str | None = None, method: str = NETWORK) -> dict[str, Any]:
    params = method_params(load_params(params_path), method)
    if method != NETWORK and stage == "video" and not has_video_training(params, method):
        return reuse_image_weights(params, method)
    mset, tset = stage_settings(params, stage)
    if max_iter_override is not None:
        tset.max_iter = max_iter_override
    if out_dir_override is not None:
        tset.out_dir = out_dir_override
    rt = dist.setup(tset.device)
    keep_freed_memory()  # large tensors reuse mapped pages (maggie.runtime)
    logging.basicConfig(level=logging.INFO if rt.is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_batch(stage, tset, params, rt.world_size)
    out_dir = Path(tset.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    remove_stale_partials(out_dir / "ckpt")
    torch.manual_seed(tset.seed)
    np.random.seed(tset.seed)

    dataset = build_dataset(params, stage)
    model = build_network(mset, stage)
    for source in init_sources(params, stage):
        init_weights(model, source)
    objective = training_objective(mset.arch)
    trainable = select_trainable(model, tset.train_only)
    model.to(rt.device)
    if rt.distributed and rt.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    core = model
    optimizer, scheduler = build_optimizer(model, tset)
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

    loader = make_loader(dataset, tset, start, rt.rank, rt.world_size)
    curve = CurveWriter(out_dir / "train_curve.csv", TRAIN_FIELDS, keep=start > 0)
    val_curve = CurveWriter(out_dir / "val_curve.csv", VAL_FIELDS, keep=start > 0)
    run = make_wandb(params, stage, rt.is_main)
    log.info("stage %s: %d samples, steps %d..%d, batch %d on %d x %s, %.1fM parameters trained", stage,
             len(dataset), start, tset.max_iter, tset.batch_size, rt.world_size, rt.device, trainable / 1e6)

    train_mode(model, tset.frozen_bn_stats)
    losses_log: list[float] = []
    bar = tqdm(total=tset.max_iter, initial=start, disable=not rt.is_main, desc=f"train {stage}", unit="step")
    t0 = time.time()
    step = start
    best_path = out_dir / "best.safetensors"
    for batch in loader:
        batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
        step += 1
        with torch.autocast(rt.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            gt = batch["alpha"].flatten(0, 1)
            out = model(batch["image"], batch["mask"], state=DecoderState(iteration=step, gt_alpha=gt))
            losses = objective(out, batch, mset)
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
                    save_weights(core, best_path, {"step": step, "val_MAD": best})
            train_mode(model, tset.frozen_bn_stats)
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
        if not best_path.exists():
            save_weights(core, best_path, {"step": step})
        write_json(out_dir / "train_summary.json", summary)
        if run is not None:
            run.finish()
    dist.teardown()
    return summary


def reuse_image_weights(params: dict[str, Any], method: str) -> dict[str, Any]:
    """A baseline without video training: its video model is its image model, run frame by frame."""

    src = best_weights(params, "image", method)
    out_dir = Path(section(params, "train.video")["out_dir"])
    if not src.exists():
        raise FileNotFoundError(f"{src}: {method} has no image weights yet; run its image stage first")
    (out_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    copy_file(src, out_dir / "best.safetensors")
    for name, fields in (("train_curve.csv", TRAIN_FIELDS), ("val_curve.csv", VAL_FIELDS)):  # dvc.yaml's outputs
        CurveWriter(out_dir / name, fields, keep=False).write()  # no steps: the header only
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
