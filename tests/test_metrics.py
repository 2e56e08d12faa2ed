"""Metrics: the authors' values on their fixtures, and small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from maggie.metrics import METRIC_NAMES, MetricAccumulator, compute_metrics, make_trimap

SPATIAL = ["MAD", "MSE", "SAD", "Grad", "Conn"]


@pytest.mark.parametrize("case,names", [("metrics_image", SPATIAL), ("metrics_video", SPATIAL + ["dtSSD", "MESSDdt"])])
def test_parity_with_reference(parity_dir, case, names):
    z = np.load(parity_dir / f"{case}.npz")
    got = compute_metrics(z["pred"], z["gt"], names)
    for n in names:
        ref = float(z[f"metric_{n}"])
        tol = 1e-3 if n == "MESSDdt" else 1e-4
        assert abs(got[n] - ref) <= tol * abs(ref), (n, got[n], ref)


def one(pred, gt):
    return np.asarray(pred, np.float32)[None, None], np.asarray(gt, np.float32)[None, None]


def test_mad_mse_sad_by_hand():
    # 2x2 map, one pixel off by 0.5: mean|d| = 0.125, sum(mask) = 4 -> MAD = 1e10 * 0.125 / 4.
    p, g = one([[0.5, 0], [0, 0]], [[0, 0], [0, 0]])
    m = compute_metrics(p, g, ["MAD", "MSE", "SAD"])
    assert m["MAD"] == pytest.approx(1e10 * 0.125 / 4 / (1 + 1e-6), rel=1e-6)
    assert m["MSE"] == pytest.approx(1e10 * 0.0625 / 4 / (1 + 1e-6), rel=1e-6)  # mean d^2 = 0.25/4
    assert m["SAD"] == pytest.approx(0.5e-3 / (1 + 1e-6), rel=1e-6)


def test_grad_zero_for_flat_and_positive_for_missing_edge():
    flat = np.full((12, 12), 0.3)
    step = np.zeros((12, 12))
    step[:, 6:] = 1.0
    assert compute_metrics(*one(flat, flat), ["Grad"])["Grad"] == 0
    # After min-max normalisation the flat prediction stays 0 everywhere, so the error is the
    # truth's own squared gradient magnitude: positive, and identical for any flat value.
    e1 = compute_metrics(*one(flat, step), ["Grad"])["Grad"]
    e2 = compute_metrics(*one(np.zeros((12, 12)), step), ["Grad"])["Grad"]
    assert e1 > 0 and e1 == pytest.approx(e2)


def test_conn_by_hand():
    # gt: a 1x3 row [1, 1, 1]; pred: [1, 0, 1] (a gap).  Largest component of pred>=t & gt>=t is
    # a single pixel (the first, lowest label) for every t>0, so round-down is 1 at pixel 0 and
    # 0 elsewhere -> phi_gt = [1, 0, 0] (d = 1 >= .15), phi_pred = [1, 1, 0]; sum|diff| = 1 -> 1e-3.
    p, g = one([[1.0, 0.0, 1.0]], [[1.0, 1.0, 1.0]])
    assert compute_metrics(p, g, ["Conn"])["Conn"] == pytest.approx(1e-3 / (1 + 1e-6), rel=1e-6)


def test_dtssd_by_hand():
    # One instance, 2 frames of 1 pixel: pred goes 0 -> 0.5, truth stays 0: 0.1 * sqrt(0.25) = 0.05.
    pred = np.array([0.0, 0.5], np.float32).reshape(2, 1, 1, 1)
    gt = np.zeros_like(pred)
    assert compute_metrics(pred, gt, ["dtSSD"])["dtSSD"] == pytest.approx(0.05 / (1 + 1e-6), rel=1e-6)


def test_messddt_static_truth_by_hand():
    # Static truth -> zero flow.  Errors e0 = (0.2)^2 on 1 px of frame 0, e1 = 0 on frame 1:
    # 1e4 * 0.04 / (16 + 1) for a 4x4 map.
    gt = np.zeros((2, 1, 4, 4), np.float32)
    gt[:, :, 1:3, 1:3] = 1.0
    pred = gt.copy()
    pred[0, 0, 0, 0] = 0.2
    got = compute_metrics(pred, gt, ["MESSDdt"])["MESSDdt"]
    assert got == pytest.approx(1e4 * 0.04 / 17 / (1 + 1e-6), rel=1e-5)


def test_region_metrics_use_the_trimap():
    g = np.zeros((100, 100), np.float32)
    g[30:70, 30:70] = 1.0
    trimap = make_trimap(g)
    assert set(np.unique(trimap)) == {0, 1, 2}
    p = g.copy()
    p[0, 0] = 1.0  # an error in the background only
    t = trimap[None, None]
    m = compute_metrics(p[None, None], g[None, None], ["MAD_fg", "MAD_bg", "MAD_unk"], t)
    assert m["MAD_fg"] == 0 and m["MAD_unk"] == 0
    n_bg = (trimap == 0).sum()
    assert m["MAD_bg"] == pytest.approx(1e10 * (1 / 10000) / n_bg / (1 + 1e-6), rel=1e-6)


def test_identical_mattes_score_zero():
    rng = np.random.default_rng(0)
    a = rng.random((3, 2, 16, 16)).astype(np.float32)
    m = compute_metrics(a, a, [n for n in METRIC_NAMES if not n.startswith("MAD_")])
    assert all(v == 0 for v in m.values()), m


def test_accumulator_merges_shards():
    rng = np.random.default_rng(1)
    p, g = rng.random((2, 1, 2, 8, 8)).astype(np.float32)
    whole = MetricAccumulator(["MAD", "SAD"])
    whole.update(p, g)
    a, b = MetricAccumulator(["MAD", "SAD"]), MetricAccumulator(["MAD", "SAD"])
    a.update(p[:, :1], g[:, :1])
    b.update(p[:, 1:], g[:, 1:])
    merged = MetricAccumulator.merge([a.state(), b.state()])
    assert merged["MAD"] == pytest.approx(whole.average()["MAD"]) and merged["SAD"] == pytest.approx(
        whole.average()["SAD"])


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="must both be"):
        compute_metrics(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 5)), ["MAD"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_metrics(np.full((1, 1, 4, 4), 2.0), np.zeros((1, 1, 4, 4)), ["MAD"])
    with pytest.raises(ValueError, match="unknown metrics"):
        MetricAccumulator(["PSNR"])
