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
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
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
from maggie.runtime import evaluation_workers, keep_freed_memory, pick_device

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


def video_test_set(params: dict[str, Any], split: str | None = None, mask_root: Path | None = None) -> VideoTestSet:
    """One split of the video test set (``test.video.val_split`` by default), guided by ``test.video.mask_dir``
    or by ``<mask_root>/<video>/<frame>/NN.png``."""
    vid_cfg = section(params, "test.video")
    return VideoTestSet(section(params, "data")["root"], vid_cfg["dir"], split or vid_cfg["val_split"],
                        vid_cfg.get("mask_dir", "xmem"), mask_root)


def video_metric_names(params: dict[str, Any]) -> tuple[str, ...]:
    return tuple(list(section(params, "test")["metrics"]) + list(section(params, "test.video").get("extra_metrics",
                                                                                                    [])))


def score_videos(model, params: dict[str, Any], data: VideoTestSet, videos: list[str], names: tuple[str, ...],
                 device: torch.device, method: str = "maggie", predict=None, preview_rows: int = 2,
                 progress: bool = False) -> tuple[dict[str, MetricAccumulator], list[list[np.ndarray]]]:
    """The metric accumulators (the method's and the mask's) over ``videos`` of ``data``, and preview rows for
    the first ``preview_rows`` of them.  Accumulators of disjoint video lists add up (``add_state``)."""
    test = section(params, "test")
    accs = _accumulators(names, method)
    rows = []
    for video in tqdm(videos, desc=f"eval {method} {data.base.name}", disable=not progress, unit="video"):
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
            vid = section(params, "test.video")
            outputs = predict_video(model, ((f.image, f.masks) for f in frames), test["short_size"], device,
                                    vid.get("clip_length", 3), sum_to_one=test.get("sum_to_one", False),
                                    meeting_short_size=vid.get("meeting_short_size"),
                                    meeting_radius=vid.get("meeting_radius", 4))
        for frame, pred in zip(frames, outputs, strict=True):
            gts.append(frame.alphas)
            masks.append(frame.masks.astype(np.float32))
            preds.append(pred)
        gt, mk, pr = np.stack(gts), np.stack(masks), np.stack(preds)
        for key, values in ((method, pr), ("mask_as_alpha", mk)):
            update_video(accs[key], values, gt)
        if len(rows) < preview_rows:
            mid = len(frames) // 2
            rows.append([label(frames[mid].image, f"{video} t={mid}"), label(colour_mattes(mk[mid]), "tracker mask"),
                         label(colour_mattes(pr[mid]), _title(method)), label(colour_mattes(gt[mid]), "truth")])
    return accs, rows


def evaluate_videos(model, params: dict[str, Any], split: str | None = None, limit: int | None = None,
                    device: torch.device | None = None, names=None, validation: bool = False,
                    previews: Path | None = None, method: str = "maggie", predict=None,
                    mask_root: Path | None = None) -> dict[str, Any]:
    """Metrics of a network on sliding clips, or of a frame-by-frame reference (``predict``), on one split.
    ``mask_root``: the guidance from ``<mask_root>/<video>/<frame>/NN.png`` instead of ``test.video.mask_dir``."""
    data = video_test_set(params, split, mask_root)
    videos = data.videos[:limit] if limit else data.videos
    accs, rows = score_videos(model, params, data, videos, tuple(names or video_metric_names(params)),
                              device or torch.device("cpu"), method, predict,
                              preview_rows=2 if previews is not None else 0, progress=not validation)
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


class _ResultWriter:
    """Where a method's results go, and the writing of a benchmark's JSON and preview (``finish``, ``write``)."""

    def __init__(self, kind: str, params: dict[str, Any], method: str, weights: str | None,
                 tracked: str | None) -> None:
        self.kind, self.params, self.method, self.tracked = kind, params, method, tracked
        self.weights = weights or method_weights(params, method, kind)
        self.out_dir = Path(section(params, "test")["out_dir"])
        base = Path(kind) if method == NETWORK else Path("methods") / method / kind
        if tracked is not None:
            base = (Path() if method == NETWORK else Path("methods") / method) / "video_masks" / tracked
        self.base = base

    def stem(self, where: dict[str, str]) -> Path:
        return self.base / where["subset"] / where["source"] if self.kind == "image" else self.base / where["split"]

    def videos(self, where: dict[str, str]) -> VideoTestSet:
        tracked = self.tracked
        masks = self.out_dir / "tracked_masks" / tracked / where["split"] if tracked is not None else None
        if masks is not None and not masks.is_dir():
            raise DataError(f"{masks}: no tracked masks; the track_masks stage makes them "
                            f"(python -m maggie.stages.track_masks --tracker {tracked})")
        return video_test_set(self.params, where["split"], masks)

    def finish(self, where: dict[str, str], states: list[dict[str, Any]], rows: list, count: int,
               seconds: float) -> dict[str, Any]:
        """A split's result from its videos' accumulator states (in video order) and preview rows."""
        accs = _accumulators(video_metric_names(self.params), self.method)
        for state in states:
            for key, acc in accs.items():
                acc.add_state(state[key])
        if rows:
            write_png(self.out_dir / "previews" / f"{self.stem(where)}.png", grid(rows[:2]))
        result = {k: acc.average() for k, acc in accs.items()}
        result["count"] = count
        return self.write(where, result, seconds)

    def write(self, where: dict[str, str], result: dict[str, Any], seconds: float) -> dict[str, Any]:
        result.update(where, method=self.method, weights=self.weights, seconds=round(seconds, 2),
                      **({"guidance": self.tracked} if self.tracked is not None else {}))
        stem = self.stem(where)
        write_json(self.out_dir / f"{stem}.json", result)
        log.info("%s: MAD %.3f (mask as alpha %.3f) over %d", stem, result[self.method]["MAD"],
                 result["mask_as_alpha"]["MAD"], result["count"])
        return result


class _BenchmarkRunner(_ResultWriter):
    """One method loaded once: evaluates whole benchmarks, or one video of a split (``score``)."""

    def __init__(self, kind: str, params_path: str, method: str, weights: str | None, device: torch.device,
                 tracked: str | None) -> None:
        super().__init__(kind, load_params(params_path), method, weights, tracked)
        self.device = device
        self.model, self.predict = None, None
        if self.weights is None:
            settings = (section(self.params, "methods") or {}).get(method) or {}
            self.predict = reference_predictor(method, settings)
        else:
            self.model = load_model(self.weights, device=device)

    def __call__(self, where: dict[str, str]) -> dict[str, Any]:
        t0 = time.time()
        previews = self.out_dir / "previews" / f"{self.stem(where)}.png"
        if self.kind == "image":
            result = evaluate_images(self.model, self.params, where["subset"], where["source"], device=self.device,
                                     previews=previews, method=self.method, predict=self.predict)
        else:
            data = self.videos(where)
            accs, rows = score_videos(self.model, self.params, data, data.videos, video_metric_names(self.params),
                                      self.device, self.method, self.predict, progress=True)
            return self.finish(where, [{k: a.state() for k, a in accs.items()}], rows, len(data.videos),
                               time.time() - t0)
        return self.write(where, result, time.time() - t0)

    def score(self, job: tuple[dict[str, str], str]) -> tuple[dict[str, Any], list, float]:
        """One video of a split: the accumulators' states, its preview row and the seconds it took."""
        where, video = job
        t0 = time.time()
        data = self.videos(where)
        accs, rows = score_videos(self.model, self.params, data, [video], video_metric_names(self.params),
                                  self.device, self.method, self.predict)
        return {k: a.state() for k, a in accs.items()}, rows, time.time() - t0


_WORKER: _BenchmarkRunner | Exception | None = None


def _start_worker(threads: int, *args) -> None:
    """A worker process of ``run_benchmarks``: its share of the threads, then the method, loaded once.  A failure
    to load is kept and raised by the first job, so the stage reports it as itself (an initializer that
    raises only breaks the pool)."""
    global _WORKER
    torch.set_num_threads(threads)
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _WORKER = _BenchmarkRunner(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised in _run_in_worker
        _WORKER = exc


def _run_in_worker(job):
    if isinstance(_WORKER, Exception):
        raise _WORKER
    assert _WORKER is not None
    return _WORKER.score(job) if isinstance(job, tuple) else _WORKER(job)


def run_benchmarks(kind: str, params_path: str, method: str = NETWORK, weights: str | None = None,
                   device: str = "auto", benchmarks: list[dict[str, str]] | None = None,
                   tracked: str | None = None, workers: int | str | None = None) -> list[dict[str, Any]]:
    """Evaluate ``method`` on image benchmarks (``{"subset", "source"}``) or video splits (``{"split"}``),
    loading it once per process; write ``<test.out_dir>/[methods/<m>/]<kind>/...json`` and a preview PNG for each.
    One stage's benchmarks share its processes: a process per benchmark cost the default pipeline about 7 s each.
    ``workers`` (default ``test.workers``): how many processes, ``maggie.runtime.evaluation_workers``.  The jobs
    are whole image benchmarks, or single videos of the splits whose metric sums are added up in video order, so
    the figures do not depend on it.
    ``tracked``: video guidance from this project's tracker (``<test.out_dir>/tracked_masks/<tracked>/``,
    ``maggie.evaluation.tracked_masks``), results under ``<test.out_dir>/video_masks/<tracked>/``."""
    benchmarks = list(benchmarks or [])
    torch_device = pick_device(device)
    keep_freed_memory()  # large tensors reuse mapped pages (maggie.runtime)
    params = load_params(params_path)
    if workers is None:
        workers = section(params, "test").get("workers", "auto")
    jobs: list = benchmarks
    if kind == "video":
        jobs = [(where, video) for where in benchmarks
                for video in video_test_set(params, where["split"]).videos]
    count = evaluation_workers(torch_device, len(jobs), workers)
    args = (kind, params_path, method, weights, torch_device, tracked)
    if count <= 1:
        runner = _BenchmarkRunner(*args)
        return [runner(where) for where in benchmarks]
    threads = max(1, torch.get_num_threads() // count)
    log.info("evaluating %d %s in %d processes of %d thread(s)", len(jobs),
             "benchmarks" if kind == "image" else "videos", count, threads)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's thread pools
    with ProcessPoolExecutor(count, mp_context=context, initializer=_start_worker,
                             initargs=(threads, *args)) as pool:
        done = list(pool.map(_run_in_worker, jobs))
    if kind == "image":
        return done
    writer = _ResultWriter(kind, params, method, weights, tracked)  # no model in this process
    results = []
    for where in benchmarks:
        mine = [d for (w, _), d in zip(jobs, done, strict=True) if w is where]
        results.append(writer.finish(where, [m[0] for m in mine], [r for m in mine for r in m[1]], len(mine),
                                       sum(m[2] for m in mine)))
    return results
