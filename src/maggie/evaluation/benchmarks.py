"""Evaluation: image benchmarks (subset x mask source) and video splits.

Used by the ``evaluate_image`` (one subset, its mask sources) and ``evaluate_video`` (the splits) stages and by the
training validation.  They write the paper's metrics (reference definitions and scales) for the trained network and, as
reference rows, for the guidance mask used directly as the alpha; a few predictions are
saved as PNG previews for the report.  Inference follows the reference protocol: short
side ``test.short_size``, padding to a multiple of 32, masks quantised to OS8 for images
(``test.image.quantise_masks``), sliding 3-frame clips for video.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from maggie.config.methods import IMAGE_STAGE_ON_VIDEO, NETWORK, best_weights, has_video_training
from maggie.config.params import load_params, section
from maggie.data.layout import ImageTestSet, VideoTestSet
from maggie.drawing import colour_mattes, grid, label
from maggie.errors import DataError
from maggie.evaluation.metrics import TEMPORAL, MetricAccumulator, make_trimap
from maggie.evaluation.references import REFERENCES, reference_predictor
from maggie.files import write_json, write_png
from maggie.inference.pipeline import predict_frames, predict_video
from maggie.models import load_model
from maggie.runtime import pick_device

log = logging.getLogger("maggie.evaluation")


def _accumulators(names, method: str = "maggie") -> dict[str, MetricAccumulator]:
    return {method: MetricAccumulator(names), "mask_as_alpha": MetricAccumulator(names)}


def _title(method: str) -> str:
    return {"maggie": "MaGGIe", "closed_form": "closed form", IMAGE_STAGE_ON_VIDEO: "MaGGIe image stage"}.get(
        method, method)


def frame_predictor(model, short_size: int, device: torch.device, quantise_masks: bool,
                    merge_duplicates: bool = False, sum_to_one: bool = False):
    """``predict(image [H, W, 3], masks [N, H, W]) -> [N, H, W]`` for a network, one image at a time."""
    def predict(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return predict_frames(model, image[None], masks[None], short_size, device, quantise_masks=quantise_masks,
                              merge_duplicates=merge_duplicates, sum_to_one=sum_to_one)[0]
    return predict


def evaluate_images(model, params: dict[str, Any], subset: str | None = None, source: str | None = None,
                    limit: int | None = None, device: torch.device | None = None, names=None,
                    validation: bool = False, previews: Path | None = None, method: str = "maggie",
                    predict=None) -> dict[str, Any]:
    """Metrics of a network (``model``) or of a reference method (``predict``) on one image benchmark."""
    test = section(params, "test")
    img_cfg = section(params, "test.image")
    subset = subset or img_cfg["val_subset"]
    source = source or img_cfg["val_source"]
    names = tuple(names or test["metrics"])
    device = device or torch.device("cpu")
    data = ImageTestSet(section(params, "data")["root"], img_cfg["dir"], subset, source)
    accs = _accumulators(names, method)
    predict = predict or frame_predictor(model, test["short_size"], device, img_cfg["quantise_masks"],
                                         img_cfg["merge_duplicate_masks"], test.get("sum_to_one", False))
    count = 0
    rows = []
    items = data.names[:limit] if limit else data.names
    for name in tqdm(items, desc=f"eval {method} {subset}/{source}", disable=validation, unit="img"):
        image, alphas, masks = data.load(name)
        pred = predict(image, masks)
        trimap = np.stack([make_trimap(a) for a in alphas])[None] if any(n.endswith(("_fg", "_bg", "_unk"))
                                                                          for n in names) else None
        accs[method].update(pred[None], alphas[None], trimap)
        accs["mask_as_alpha"].update(masks[None].astype(np.float32), alphas[None], trimap)
        count += 1
        if previews is not None and len(rows) < 3:
            rows.append([label(image, name), label(colour_mattes(masks.astype(np.float32)), source),
                         label(colour_mattes(pred), _title(method)), label(colour_mattes(alphas), "truth")])
    if previews is not None and rows:
        write_png(previews, grid(rows))
    result = {k: acc.average() for k, acc in accs.items()}
    result["count"] = count
    return result


def against_mask(model, params: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    """Per image subset: MaGGIe's mean MAD over the mask sources, the mask's, their ratio, the sources where
    MaGGIe is below the mask, and both per source (the headline figures, for ablations and the warm start)."""
    out: dict[str, Any] = {}
    img = section(params, "test.image")
    for subset in img["subsets"]:
        rows = []
        for source in img["mask_sources"]:
            r = evaluate_images(model, params, subset, source, device=device, names=("MAD",), validation=True)
            rows.append((source, r["maggie"]["MAD"], r["mask_as_alpha"]["MAD"]))
        mad = sum(r[1] for r in rows) / len(rows)
        mask = sum(r[2] for r in rows) / len(rows)
        out[subset] = {"MAD": mad, "mask_MAD": mask, "ratio": mad / mask, "wins": sum(r[1] < r[2] for r in rows),
                       "per_source": {s: {"MAD": a, "mask_MAD": b} for s, a, b in rows}}
        log.info("%s: MAD %.0f vs mask %.0f (%.2f), below the mask in %d of %d", subset, mad, mask, mad / mask,
                 out[subset]["wins"], len(rows))
    return out


def video_against_mask(model, params: dict[str, Any]) -> dict[str, Any]:
    """Per video split: the network's MAD and dtSSD, the tracker mask's MAD and their ratio (the video
    headline figures).  An image network is run frame by frame, a video network on sliding clips."""
    out: dict[str, Any] = {}
    for split in section(params, "test.video")["splits"]:
        r = evaluate_videos(model, params, split, names=("MAD", "dtSSD"), validation=True)
        out[split] = {"MAD": r["maggie"]["MAD"], "mask_MAD": r["mask_as_alpha"]["MAD"], "dtSSD": r["maggie"]["dtSSD"],
                      "ratio": r["maggie"]["MAD"] / r["mask_as_alpha"]["MAD"]}
        log.info("%s: MAD %.0f vs mask %.0f, dtSSD %.3f", split, out[split]["MAD"], out[split]["mask_MAD"],
                 out[split]["dtSSD"])
    return out


def update_video(acc: MetricAccumulator, pred: np.ndarray, gt: np.ndarray) -> None:
    """Spatial metrics on every frame; temporal ones once per consecutive frame pair, as the
    reference's test loop scores each newly final pair (it batches the last three pairs together)."""
    spatial = [n for n in acc.names if n not in TEMPORAL]
    temporal = [n for n in acc.names if n in TEMPORAL]
    part = MetricAccumulator(spatial)
    part.update(pred, gt)
    acc.add_state(part.state())
    for t in range(1, gt.shape[0] if temporal else 0):
        pair = MetricAccumulator(temporal)
        pair.update(pred[t - 1:t + 1], gt[t - 1:t + 1])
        acc.add_state(pair.state())


def evaluate_videos(model, params: dict[str, Any], split: str | None = None, limit: int | None = None,
                    device: torch.device | None = None, names=None, validation: bool = False,
                    previews: Path | None = None, method: str = "maggie", predict=None,
                    mask_root: Path | None = None) -> dict[str, Any]:
    """Metrics of a network on sliding clips, or of a frame-by-frame reference (``predict``), on one split.
    ``mask_root``: the guidance from ``<mask_root>/<video>/<frame>/NN.png`` instead of ``test.video.mask_dir``."""
    test = section(params, "test")
    vid_cfg = section(params, "test.video")
    split = split or vid_cfg["val_split"]
    names = tuple(names or (list(test["metrics"]) + list(vid_cfg.get("extra_metrics", []))))
    device = device or torch.device("cpu")
    data = VideoTestSet(section(params, "data")["root"], vid_cfg["dir"], split, vid_cfg.get("mask_dir", "xmem"),
                        mask_root)
    accs = _accumulators(names, method)
    videos = data.videos[:limit] if limit else data.videos
    rows = []
    for video in tqdm(videos, desc=f"eval {method} {split}", disable=validation, unit="video"):
        frames = data.frames(video)
        gts, masks, preds = [], [], []
        if predict is None and getattr(model, "cfg", None) is not None and model.cfg.arch == "maggie_image":
            # The image network sees one frame at a time (its attention would otherwise span the clip).
            predict = frame_predictor(model, test["short_size"], device, quantise_masks=False,
                                      sum_to_one=test.get("sum_to_one", False))
        if predict is not None:
            outputs = (predict(f.image, f.masks) for f in frames)
        elif getattr(model, "first_frame_guided", False):
            # FTP-VM, OTVM: the whole video in one call, guided by frame 0 only (by its true alpha in the paper).
            first = frames[0].alphas if section(params, "methods")["first_frame_guidance"] == "alpha" else None
            outputs = iter(predict_frames(model, np.stack([f.image for f in frames]),
                                          np.stack([f.masks for f in frames]), test["short_size"], device,
                                          sum_to_one=test.get("sum_to_one", False), first_alpha=first))
        else:
            outputs = predict_video(model, ((f.image, f.masks) for f in frames), test["short_size"], device,
                                    vid_cfg.get("clip_length", 3), sum_to_one=test.get("sum_to_one", False))
        for frame, pred in zip(frames, outputs, strict=True):
            gts.append(frame.alphas)
            masks.append(frame.masks.astype(np.float32))
            preds.append(pred)
        gt, mk, pr = np.stack(gts), np.stack(masks), np.stack(preds)
        for key, values in ((method, pr), ("mask_as_alpha", mk)):
            update_video(accs[key], values, gt)
        if previews is not None and len(rows) < 2:
            mid = len(frames) // 2
            rows.append([label(frames[mid].image, f"{video} t={mid}"), label(colour_mattes(mk[mid]), "tracker mask"),
                         label(colour_mattes(pr[mid]), _title(method)), label(colour_mattes(gt[mid]), "truth")])
    if previews is not None and rows:
        write_png(previews, grid(rows))
    result = {k: acc.average() for k, acc in accs.items()}
    result["count"] = len(videos)
    return result


def method_weights(params: dict[str, Any], method: str, kind: str) -> str | None:
    """The weights a method is evaluated with (None for the references)."""
    if method in REFERENCES:
        return None
    if method == IMAGE_STAGE_ON_VIDEO:
        return str(best_weights(params, "image"))
    video = kind == "video" and (method == NETWORK or has_video_training(params, method))
    return str(best_weights(params, "video" if video else "image", method))


def run_benchmarks(kind: str, params_path: str, method: str = NETWORK, weights: str | None = None,
                   device: str = "auto", benchmarks: list[dict[str, str]] | None = None,
                   tracked: str | None = None) -> list[dict[str, Any]]:
    """Evaluate ``method`` on image benchmarks (``{"subset", "source"}``) or video splits (``{"split"}``),
    loading it once; write ``<test.out_dir>/[methods/<m>/]<kind>/...json`` and a preview PNG for each.
    One process for a stage's benchmarks: a process per benchmark cost the default pipeline about 7 s each.
    ``tracked``: video guidance from this project's tracker (``<test.out_dir>/tracked_masks/<tracked>/``,
    ``maggie.evaluation.tracked_masks``), results under ``<test.out_dir>/video_masks/<tracked>/``."""
    params = load_params(params_path)
    device = pick_device(device)
    weights = weights or method_weights(params, method, kind)
    model, predict = None, None
    if weights is None:
        settings = (section(params, "methods") or {}).get(method) or {}
        predict = reference_predictor(method, settings)
    else:
        model = load_model(weights, device=device)
    out_dir = Path(section(params, "test")["out_dir"])
    base = Path(kind) if method == NETWORK else Path("methods") / method / kind
    if tracked is not None:
        base = (Path() if method == NETWORK else Path("methods") / method) / "video_masks" / tracked
    results = []
    for where in benchmarks or []:
        t0 = time.time()
        if kind == "image":
            stem = base / where["subset"] / where["source"]
            result = evaluate_images(model, params, where["subset"], where["source"], device=device,
                                     previews=out_dir / "previews" / f"{stem}.png", method=method, predict=predict)
        else:
            stem = base / where["split"]
            masks = out_dir / "tracked_masks" / tracked / where["split"] if tracked is not None else None
            if masks is not None and not masks.is_dir():
                raise DataError(f"{masks}: no tracked masks; the track_masks stage makes them "
                                f"(python -m maggie.stages.track_masks --tracker {tracked})")
            result = evaluate_videos(model, params, where["split"], device=device,
                                     previews=out_dir / "previews" / f"{stem}.png", method=method, predict=predict,
                                     mask_root=masks)
        result.update(where, method=method, weights=weights, seconds=round(time.time() - t0, 2),
                      **({"guidance": tracked} if tracked is not None else {}))
        write_json(out_dir / f"{stem}.json", result)
        log.info("%s: MAD %.3f (mask as alpha %.3f) over %d", stem, result[method]["MAD"],
                 result["mask_as_alpha"]["MAD"], result["count"])
        results.append(result)
    return results
