"""Methods beside MaGGIe: baseline overlays, their training through maggie.stages.train_*, references, evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_project import REPO, env, make_data, make_project, run

from maggie.config.methods import method_params
from maggie.config.params import LossWeights, ParamsError, load_params
from maggie.evaluation.references import closed_form_alpha, mask_alpha, reference_predictor, trimap_from_mask
from maggie.models import InstMatt, SparseMat, load_model
from maggie.models.baselines.ftpvm_adapter import FTPVMBaseline
from maggie.models.baselines.otvm_adapter import OTVMBaseline
from maggie.models.registry import training_objective
from maggie.runtime import evaluation_workers

pymatting = pytest.importorskip("pymatting")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    overrides = {"train": {"image": {"max_iter": 1, "val_iter": 100, "batch_size": 2},
                           "video": {"max_iter": 1, "val_iter": 100, "batch_size": 1}}}
    project = make_project(tmp_path_factory.mktemp("methods"), overrides)
    make_data(project)
    return project


def test_baseline_overlay_follows_its_reference_config(tiny):
    params = load_params(tiny / "params.yaml")
    mgm = method_params(params, "mgm_tcvom")
    assert mgm["model"]["image"]["arch"] == "mgm" and mgm["model"]["video"]["arch"] == "mgm_tcvom"
    assert mgm["model"]["video"]["loss_atten_w"] == 1.0 and mgm["model"]["image"]["loss_reweight_os8"] is False
    assert mgm["dataset"]["train"]["image"]["max_inst"] == 1
    assert mgm["train"]["video"]["out_dir"] == "models/baselines/mgm_tcvom/video"
    assert params["model"]["image"]["arch"] == "maggie_image"  # the input is left alone
    assert method_params(params, "maggie") is params
    with pytest.raises(ParamsError, match="no 'baselines.nope' entry"):
        method_params(params, "nope")


def test_sparsemat_mgm_and_instmatt_train_through_the_engine(tiny):
    for method in ("sparsemat", "mgm", "instmatt"):
        for stage in ("image", "video"):
            run([sys.executable, "-m", f"maggie.stages.train_{stage}", "--method", method,
                 "--params", "params.yaml"], tiny)
    sm = load_model(tiny / "models/baselines/sparsemat/video/best.safetensors")
    assert isinstance(sm, SparseMat)
    summary = json.loads((tiny / "models/baselines/sparsemat/video/train_summary.json").read_text())
    assert summary["steps"] == 1
    # MGM has no video training: its video model is its image model.
    mgm = tiny / "models/baselines/mgm"
    assert (mgm / "video/best.safetensors").read_bytes() == (mgm / "image/best.safetensors").read_bytes()
    assert json.loads((mgm / "video/train_summary.json").read_text())["steps"] == 0
    assert (mgm / "video/train_curve.csv").read_text().startswith("step,")  # dvc.yaml's outputs, header only
    im = load_model(tiny / "models/baselines/instmatt/image/best.safetensors")
    assert isinstance(im, InstMatt) and im.cfg.arch == "instmatt"
    curve = (tiny / "models/baselines/instmatt/image/train_curve.csv").read_text().splitlines()
    assert "loss_sum_one" in curve[0] and len(curve) == 2
    run([sys.executable, "-m", "maggie.stages.evaluate_image", "--method", "instmatt", "--subset", "in_dist",
         "--source", "sim05_holes", "--params", "params.yaml"], tiny)
    result = json.loads((tiny / "eval/methods/instmatt/image/in_dist/sim05_holes.json").read_text())
    assert result["method"] == "instmatt" and result["instmatt"]["MAD"] >= 0
    # Both are then evaluated by the evaluation stage's command.
    run([sys.executable, "-m", "maggie.stages.evaluate_video", "--method", "mgm", "--split", "comp_easy",
         "--params", "params.yaml"], tiny)
    result = json.loads((tiny / "eval/methods/mgm/video/comp_easy.json").read_text())
    assert result["method"] == "mgm" and result["mgm"]["MAD"] >= 0 and "dtSSD" in result["mgm"]


def test_frame_zero_guided_baselines_train_and_evaluate_through_the_stages(tiny):
    """FTP-VM and OTVM: image stage (one-frame clips), video stage from it, video evaluation guided by frame 0."""
    for method, cls in (("ftpvm", FTPVMBaseline), ("otvm", OTVMBaseline)):
        for stage in ("image", "video"):
            run([sys.executable, "-m", f"maggie.stages.train_{stage}", "--method", method,
                 "--params", "params.yaml"], tiny)
            summary = json.loads((tiny / f"models/baselines/{method}/{stage}/train_summary.json").read_text())
            assert summary["steps"] == 1 and np.isfinite(summary["final_loss"]), (method, stage, summary)
        model = load_model(tiny / f"models/baselines/{method}/video/best.safetensors")
        assert isinstance(model, cls) and model.first_frame_guided
        run([sys.executable, "-m", "maggie.stages.evaluate_video", "--method", method, "--split", "comp_easy",
             "--params", "params.yaml"], tiny)
        result = json.loads((tiny / f"eval/methods/{method}/video/comp_easy.json").read_text())
        assert result["method"] == method and result[method]["MAD"] > 0 and "dtSSD" in result[method]


def test_sparsemat_objective_is_dispatched():
    model = SparseMat().train()
    x = torch.randn(2, 1, 3, 64, 64)
    gt = torch.zeros(2, 1, 1, 64, 64)
    gt[..., 10:50, 10:50] = 1
    out = model(x, (gt > 0.5).float())
    losses = training_objective("sparsemat")(out, {"alpha": gt, "mask": gt}, LossWeights(
        loss_alpha_w=1.0, loss_alpha_grad_w=0.05, loss_alpha_lap_w=0.05, loss_atten_w=0.0, loss_reweight_os8=False,
        loss_dtSSD_w=0.0, loss_temp_w=0.0, loss_sum_one_w=0.0, loss_os8_bce_w=0.0, loss_occlusion_w=0.0,
        loss_meeting_w=0.0, loss_meeting_sum_w=0.0, loss_after_sum_rule=False))
    assert {"loss_rec", "loss_lap", "loss_grad", "total"} == set(losses)


def test_trimap_band():
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1
    tri = trimap_from_mask(mask, 3)
    assert tri[20, 20] == 1.0 and tri[0, 0] == 0.0
    # Rows 10..29 are the mask: 3 px either side of its edge (rows 7..12) are unknown.
    assert all(tri[r, 20] == 0.5 for r in range(7, 13))
    assert tri[13, 20] == 1.0 and tri[6, 20] == 0.0


def test_closed_form_recovers_a_soft_edge_and_normalises_instances():
    rng = np.random.default_rng(0)
    h, w = 48, 64
    xs = np.clip((np.arange(w) - 28) / 8.0, 0, 1)  # a soft vertical edge from x=28 to x=36
    true_alpha = np.tile(xs, (h, 1))
    fg, bg = np.array([230.0, 40, 40]), np.array([30.0, 60, 200])
    image = (true_alpha[..., None] * fg + (1 - true_alpha[..., None]) * bg + rng.normal(0, 1, (h, w, 3)))
    image = np.clip(image, 0, 255).astype(np.uint8)
    mask = (true_alpha > 0.5).astype(np.float32)
    alpha = closed_form_alpha(image, mask[None], band=8)[0]
    band = (xs > 0) & (xs < 1)
    assert np.abs(alpha[:, band] - true_alpha[:, band]).mean() < 0.05
    assert np.abs(mask[:, band] - true_alpha[:, band]).mean() > 0.2  # the mask itself is far off there
    # Two overlapping masks of the same person: each solves to ~the same matte; the pair is scaled to sum <= 1.
    both = closed_form_alpha(image, np.stack([mask, mask]), band=8)
    assert both.sum(0).max() <= 1.0 + 1e-5
    np.testing.assert_allclose(both[0], both[1])
    assert mask_alpha(image, mask[None]).dtype == np.float32
    with pytest.raises(ValueError, match="unknown reference method"):
        reference_predictor("nope")


def test_reference_evaluation_stage(tiny):
    run([sys.executable, "-m", "maggie.stages.evaluate_image", "--method", "closed_form", "--subset", "in_dist",
         "--source", "sim05_holes", "--params", "params.yaml"], tiny)
    result = json.loads((tiny / "eval/methods/closed_form/image/in_dist/sim05_holes.json").read_text())
    assert result["weights"] is None and result["count"] == 2
    assert set(result["closed_form"]) >= {"MAD", "MSE", "SAD", "Grad", "Conn"}
    assert (tiny / "eval/previews/methods/closed_form/image/in_dist/sim05_holes.png").stat().st_size > 0


def test_evaluation_in_worker_processes_gives_the_same_figures(tiny):
    sources = ["--source", "sim01_coarse28", "--source", "sim05_holes", "--source", "sim10_severe"]
    base = [sys.executable, "-m", "maggie.stages.evaluate_image", "--method", "closed_form", "--subset", "in_dist",
            *sources, "--params", "params.yaml"]
    out = tiny / "eval/methods/closed_form/image/in_dist"

    def figures() -> dict:
        rows = {}
        for name in ("sim01_coarse28", "sim05_holes", "sim10_severe"):
            row = json.loads((out / f"{name}.json").read_text())
            row.pop("seconds")
            rows[name] = row
        return rows

    run(base + ["--workers", "1"], tiny)
    serial = figures()
    res = run(base + ["--workers", "2"], tiny)
    assert "in 2 processes" in res.stdout + res.stderr
    assert figures() == serial
    bad = subprocess.run(base + ["--workers", "two"], cwd=tiny, env=env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "workers 'two'" in bad.stderr and "Traceback" not in bad.stderr

    # Video splits: the jobs are single videos, their metric sums added up per split (float32 Grad convolutions
    # in another process agree to about 1e-7).
    video = [sys.executable, "-m", "maggie.stages.evaluate_video", "--method", "closed_form", "--split", "comp_easy",
             "--split", "comp_hard", "--params", "params.yaml"]
    splits = tiny / "eval/methods/closed_form/video"

    def video_figures() -> dict:
        return {s: json.loads((splits / f"{s}.json").read_text()) for s in ("comp_easy", "comp_hard")}

    run(video + ["--workers", "1"], tiny)
    serial = video_figures()
    res = run(video + ["--workers", "2"], tiny)
    assert "videos in 2 processes" in res.stdout + res.stderr
    for split, row in video_figures().items():
        assert row["count"] == serial[split]["count"] >= 1
        for method in ("closed_form", "mask_as_alpha"):
            assert row[method].keys() == serial[split][method].keys()
            for name, value in row[method].items():
                assert value == pytest.approx(serial[split][method][name], rel=1e-6, abs=1e-9), (split, name)


def test_evaluation_workers_follow_the_cores_and_the_jobs():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert evaluation_workers(cpu, 10) == 2
        assert evaluation_workers(cpu, 3) == 1  # fewer than two benchmarks per process: not worth a process
        assert evaluation_workers(cuda, 10) == 1
        assert evaluation_workers(cpu, 10, 4) == 4 and evaluation_workers(cpu, 2, "8") == 2
        with pytest.raises(ParamsError, match="workers 0"):
            evaluation_workers(cpu, 10, 0)
    finally:
        torch.set_num_threads(threads)


KEEP_FREED_MEMORY_PROBE = """
import ctypes, sys, torch
from maggie.runtime import keep_freed_memory
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
info = type("MallInfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in names]})
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = info
done = keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.ones(64 << 20, dtype=torch.uint8)
print(int(done), libc.mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_serves_large_tensors_from_the_heap():
    """The tensors of a forward (tens of MB) come from the heap, not from fresh mappings; opt-out honoured."""
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")

    def probe(**extra: str) -> tuple[int, int]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", KEEP_FREED_MEMORY_PROBE], capture_output=True, text=True,
                             check=True, env={**environment, **extra})
        done, mapped = out.stdout.split()
        return int(done), int(mapped)

    done, mapped = probe()
    assert done == 1 and mapped < (1 << 20)  # the 64 MB tensor lies in the heap
    done, mapped = probe(MAGGIE_SYSTEM_MALLOC="1")
    assert done == 0 and mapped >= (64 << 20)  # glibc's default: a fresh mapping


def test_cost_benchmark_writes_a_row_per_method_and_count(tmp_path):
    out = tmp_path / "cost.json"
    run([sys.executable, str(REPO / "benchmarks" / "bench_methods.py"), "--size", "64", "64", "--instances", "1", "2",
         "--methods", "mgm", "sparsemat", "--repeats", "1", "--out", str(out)], tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["instances"]) for r in rows] == [("mgm", 1), ("mgm", 2), ("sparsemat", 1),
                                                            ("sparsemat", 2)]
    assert all(r["ms_per_frame"] > 0 and r["peak_mb"] > 0 and r["repeats"] == 1 for r in rows)
    assert out.with_suffix(".png").stat().st_size > 0
    # --update remeasures only the given (method, count) cases and keeps the other rows.
    before = {(r["method"], r["instances"]): r for r in rows}
    run([sys.executable, str(REPO / "benchmarks" / "bench_methods.py"), "--size", "64", "64", "--instances", "2",
         "--methods", "mgm", "--repeats", "2", "--out", str(out), "--update"], tmp_path)
    after = {(r["method"], r["instances"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(after) == set(before) and after[("mgm", 2)]["repeats"] == 2
    assert all(after[k] == before[k] for k in before if k != ("mgm", 2))
