"""Metrics: the authors' values on their fixtures, hand-computed small cases, invariants, bad input.

Averages divide by (count + 1e-6), as the reference does, hence the ``/ (c + EPS)`` below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from maggie.evaluation.metrics import (
    METRIC_NAMES,
    MetricAccumulator,
    _largest_component,
    compute_metrics,
    make_trimap,
)

EPS = 1e-6
SPATIAL = ["MAD", "MSE", "SAD", "Grad", "Conn"]
REPO = Path(__file__).resolve().parents[1]


def _fixture_dir() -> Path:
    shared = Path(os.environ.get("MAGGIE_SHARED", REPO.parent / "shared"))
    parity = shared / "parity"
    if not (parity / "metrics_image.npz").exists():
        pytest.skip(f"metric fixtures not found under {parity} (set MAGGIE_SHARED)")
    return parity


def clip(*frames) -> np.ndarray:
    """Frames of one instance -> float32 [T, 1, H, W]."""
    return np.asarray(frames, np.float32)[:, None]


# ------------------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("case,names", [("metrics_image", SPATIAL),
                                        ("metrics_video", SPATIAL + ["dtSSD", "MESSDdt"])])
def test_parity_with_authors_code(case, names):
    z = np.load(_fixture_dir() / f"{case}.npz")
    acc = MetricAccumulator(names)
    acc.update(z["pred"], z["gt"])
    got = acc.average()
    for name in names:
        ref = float(z[f"metric_{name}"])
        tol = 1e-3 if name == "MESSDdt" else 1e-4
        assert got[name] == pytest.approx(ref, rel=tol), name


# ------------------------------------------------------------------------------ hand-computed values

def test_mad_mse_sad_by_hand():
    # 2x2 map, one pixel off by 0.5.  |d| sums to 0.5, so mean|d| = 0.125 and the region has 4 px:
    # MAD = 1e10 * 0.125 / 4 = 3.125e8; MSE = 1e10 * (0.25 / 4) / 4 = 1.5625e8; SAD = 0.5e-3.
    m = compute_metrics(clip([[0.5, 0], [0, 0]]), clip([[0, 0], [0, 0]]), ["MAD", "MSE", "SAD"])
    assert m["MAD"] == pytest.approx(3.125e8 / (1 + EPS), rel=1e-6)
    assert m["MSE"] == pytest.approx(1.5625e8 / (1 + EPS), rel=1e-6)
    assert m["SAD"] == pytest.approx(0.5e-3 / (1 + EPS), rel=1e-6)


def test_mad_is_resolution_dependent():
    # The same pattern upsampled 2x per side: sum|d| grows 4x but (HW)^2 grows 16x, so MAD
    # (1e10 * sum|d| / (HW)^2) drops 4x while SAD grows 4x.
    small = compute_metrics(clip([[0.5, 0], [0, 0]]), clip(np.zeros((2, 2))), ["MAD", "SAD"])
    big_pred = np.kron(np.array([[0.5, 0], [0, 0]]), np.ones((2, 2)))
    big = compute_metrics(clip(big_pred), clip(np.zeros((4, 4))), ["MAD", "SAD"])
    assert big["MAD"] == pytest.approx(small["MAD"] / 4, rel=1e-6)
    assert big["SAD"] == pytest.approx(small["SAD"] * 4, rel=1e-6)


def _gauss_1d(sigma=1.4):
    r = np.arange(-4, 5)
    return np.exp(-(r**2) / (2 * sigma**2))


def test_grad_constant_truth_vs_impulse_by_hand():
    # Truth constant -> after min-max normalisation all 0 -> no gradient.  Prediction: one pixel
    # of 1 in a 9x9 map, 4 px from every border; it normalises to 1 / (1 + 1e-6).  Its filtered
    # maps are the two filters themselves, each of unit L2 norm, so sum |grad p|^2 = 2 / (1+1e-6)^2
    # and Grad = 1e-3 * 2 / (1 + 1e-6)^2.
    pred = np.zeros((9, 9))
    pred[4, 4] = 1.0
    got = compute_metrics(clip(pred), clip(np.full((9, 9), 0.3)), ["Grad"])["Grad"]
    assert got == pytest.approx(2e-3 / (1 + EPS) ** 3, rel=1e-5)
    # Flat truth against a flat prediction of another value: both normalise to 0.
    assert compute_metrics(clip(np.full((9, 9), 0.8)), clip(np.full((9, 9), 0.3)), ["Grad"])["Grad"] == 0


def test_grad_normalises_over_the_whole_batch():
    # Two instance maps: impulses of 1.0 and 0.5.  Min-max over the batch divides both by 1, so the
    # second contributes 0.5^2 * 2: total 1e-3 * (2 + 0.5) over 2 maps = 1.25e-3 (per-map
    # normalisation would give 2e-3).
    pred = np.zeros((1, 2, 9, 9), np.float32)
    pred[0, 0, 4, 4], pred[0, 1, 4, 4] = 1.0, 0.5
    got = compute_metrics(pred, np.zeros_like(pred), ["Grad"])["Grad"]
    assert got == pytest.approx(2.5e-3 / 2, rel=1e-5)


def test_grad_zero_pads_the_border():
    # Impulse in the corner: zero padding keeps only the taps with both offsets <= 0.  The x filter
    # is gauss(row) * dgauss(col): over that quadrant its energy share is
    # (sum_{r<=0} g^2 / sum g^2) * (sum_{c<=0} dg^2 / sum dg^2) = (1 + g(0)^2 / sum g^2) / 2 * 1/2
    # (g is even; dg is odd with dg(0) = 0); the y filter is its transpose, same share.
    g2 = _gauss_1d() ** 2
    share = (1 + g2[4] / g2.sum()) / 4
    pred = np.zeros((9, 9))
    pred[0, 0] = 1.0
    got = compute_metrics(clip(pred), clip(np.zeros((9, 9))), ["Grad"])["Grad"]
    assert got == pytest.approx(1e-3 * 2 * share, rel=1e-5)


def test_largest_component_rules():
    # 4-connectivity: diagonal pixels are separate components.
    diagonal = np.array([[1, 0], [0, 1]], np.uint8)
    assert _largest_component(diagonal).sum() == 1
    # The largest wins even if it comes later in raster order.
    row = np.array([[1, 0, 1, 1]], np.uint8)
    assert _largest_component(row).tolist() == [[False, False, True, True]]
    # Ties go to the component met first in raster order (here the one starting at row 0, col 2).
    tie = np.array([[0, 0, 1], [1, 0, 1], [1, 0, 0]], np.uint8)
    assert _largest_component(tie).astype(int).tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert not _largest_component(np.zeros((3, 3), np.uint8)).any()


def test_conn_fractional_by_hand():
    # gt = [0.5, 0.5], pred = [0.5, 0.2] (1x2).  Thresholds 0.1, 0.2: both pixels in one component.
    # At 0.3 pixel 1 drops out and gets level 0.2; at 0.6 pixel 0 drops out and gets 0.5.
    # d_gt = [0, 0.3] -> phi_gt = [1, 0.7]; d_pred = [0, 0] -> phi_pred = [1, 1]; sum = 0.3 -> 3e-4.
    got = compute_metrics(clip([[0.5, 0.2]]), clip([[0.5, 0.5]]), ["Conn"])["Conn"]
    assert got == pytest.approx(3e-4 / (1 + EPS), rel=1e-5)


def test_conn_tie_by_hand():
    # gt = [1, 1, 1], pred = [1, 0, 1]: at every threshold the intersection is pixels 0 and 2, a
    # tie, won by pixel 0; pixels 1 and 2 get level 0 at the first threshold; pixel 0 ends at 1.
    # d_gt = [0, 1, 1] -> phi_gt = [1, 0, 0]; d_pred = [0, 0, 1] -> phi_pred = [1, 1, 0]: sum 1.
    got = compute_metrics(clip([[1.0, 0.0, 1.0]]), clip([[1.0, 1.0, 1.0]]), ["Conn"])["Conn"]
    assert got == pytest.approx(1e-3 / (1 + EPS), rel=1e-6)


def test_dtssd_by_hand():
    # One pair, 1x2 px: the prediction moves by [0.3, 0.4], the truth is static:
    # 0.1 * sqrt(0.09 + 0.16) = 0.05.
    got = compute_metrics(clip([[0, 0]], [[0.3, 0.4]]), clip([[0, 0]], [[0, 0]]), ["dtSSD"])["dtSSD"]
    assert got == pytest.approx(0.05 / (1 + EPS), rel=1e-6)
    # Three frames in one update: one square root over both pairs, 0.1 * sqrt(0.3^2 + 0.4^2) = 0.05
    # (not the per-pair mean 0.035).  A second, error-free instance halves the average.
    pred = np.zeros((3, 2, 1, 1), np.float32)
    pred[:, 0, 0, 0] = [0.0, 0.3, 0.7]
    got = compute_metrics(pred, np.zeros_like(pred), ["dtSSD"])["dtSSD"]
    assert got == pytest.approx(0.05 / (2 + EPS), rel=1e-5)


def test_messddt_static_truth_transposed_warp_by_hand():
    # Static (all-zero) truth -> zero flow.  2x3 map, error (0.5)^2 = 0.25 at (0, 1) in both frames.
    # The reference's warp reads (row, col) from (min(col, 1), min(row, 2)), so warped e1 has the
    # 0.25 at (1, 0), not (0, 1): |e0 - warp(e1)| sums to 0.5 (an exact warp would give 0).
    # Denominator: 6 px + 1 = 7.  MESSDdt = 1e4 * 0.5 / 7.
    frame = [[0, 0.5, 0], [0, 0, 0]]
    zeros = np.zeros((2, 3))
    got = compute_metrics(clip(frame, frame), clip(zeros, zeros), ["MESSDdt"])["MESSDdt"]
    assert got == pytest.approx(1e4 * 0.5 / 7 / (1 + EPS), rel=1e-5)


def test_messddt_first_pair_quirk_and_per_pair_option():
    # 1x1 px, static zero truth, prediction [0, 0.5, 0] -> errors e = [0, 0.25, 0].
    # Reference (every pair warps frame 1): |0 - 0.25| + |0.25 - 0.25| = 0.25 over (1+1)*2 = 4
    # -> 625.  Each pair warping its own next frame: 0.25 + 0.25 = 0.5 over 4 -> 1250, which is also
    # what one update per pair gives (1250 each).
    pred, gt = clip([[0.0]], [[0.5]], [[0.0]]), clip([[0.0]], [[0.0]], [[0.0]])
    assert compute_metrics(pred, gt, ["MESSDdt"])["MESSDdt"] == pytest.approx(625 / (1 + EPS), rel=1e-5)
    fixed = MetricAccumulator(["MESSDdt"], per_pair_warp=True)
    fixed.update(pred, gt)
    assert fixed.average()["MESSDdt"] == pytest.approx(1250 / (1 + EPS), rel=1e-5)
    pairs = MetricAccumulator(["MESSDdt"])
    pairs.update(pred[:2], gt[:2])
    pairs.update(pred[1:], gt[1:])
    assert pairs.average()["MESSDdt"] == pytest.approx(1250 / (1 + EPS), rel=1e-5)


def test_region_mads_by_hand():
    # Trimap [[fg, unk], [bg, bg]], errors [[0.5, 0.2], [0.1, 0]] on a 2x2 map.  Each region MAD is
    # 1e10 * (sum of its errors / 4) / (its size): fg 1e10 * 0.125 / 1, unk 1e10 * 0.05 / 1,
    # bg 1e10 * 0.025 / 2.
    trimap = np.array([[2, 1], [0, 0]], np.uint8)[None, None]
    m = compute_metrics(clip([[0.5, 0.2], [0.1, 0]]), clip(np.zeros((2, 2))), list(METRIC_NAMES[-3:]), trimap)
    assert m["MAD_fg"] == pytest.approx(1.25e9 / (1 + EPS), rel=1e-5)
    assert m["MAD_unk"] == pytest.approx(5e8 / (1 + EPS), rel=1e-5)
    assert m["MAD_bg"] == pytest.approx(1.25e8 / (1 + EPS), rel=1e-5)


def test_region_mads_default_to_the_truths_trimap_and_trimap_spares_other_metrics():
    rng = np.random.default_rng(3)
    gt = np.zeros((1, 2, 40, 40), np.float32)
    gt[:, :, 10:30, 10:30] = 1.0
    pred = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
    names = ["MAD", "MAD_fg", "MAD_bg", "MAD_unk"]
    explicit = compute_metrics(pred, gt, names, make_trimap(gt))
    assert compute_metrics(pred, gt, names) == explicit
    assert explicit["MAD"] == compute_metrics(pred, gt, ["MAD"])["MAD"]


def test_make_trimap_by_hand():
    # 3x3 block of ones in a 7x7 map, 3x3 ellipse (a cross).  Dilation: the block plus its
    # 4-neighbour ring; erosion: the centre only.  The band (1) is dilation minus centre; the
    # centre keeps 2; the rest is 0.  The image edge is not a transition.
    alpha = np.zeros((7, 7), np.float32)
    alpha[2:5, 2:5] = 1.0
    expected = np.zeros((7, 7), np.uint8)
    expected[1:6, 2:5] = 1
    expected[2:5, 1:6] = 1
    expected[3, 3] = 2
    assert (make_trimap(alpha, kernel_size=3) == expected).all()
    assert (make_trimap((alpha * 255).astype(np.uint8), kernel_size=3) == expected).all()
    assert (make_trimap(np.full((2, 5, 5), 0.7)) == 2).all()
    assert (make_trimap(np.full((5, 5), 0.3)) == 0).all()


# ---------------------------------------------------------------------------------------- invariants

def test_identical_mattes_score_zero_for_every_metric():
    rng = np.random.default_rng(0)
    a = rng.random((3, 2, 16, 20)).astype(np.float32)
    a[:, :, 4:12, 5:15] = 1.0
    m = compute_metrics(a, a, METRIC_NAMES)
    assert set(m) == set(METRIC_NAMES)
    assert all(v == 0 for v in m.values()), m


def test_single_frame_skips_temporal_metrics():
    acc = MetricAccumulator(["MAD", "dtSSD", "MESSDdt"])
    acc.update(clip([[0.5, 0]]), clip([[0, 0]]))
    assert acc.state()["dtSSD"] == (0.0, 0.0) and acc.state()["MESSDdt"] == (0.0, 0.0)
    assert acc.state()["MAD"][1] == 1


def test_shard_states_merge_to_the_whole():
    rng = np.random.default_rng(1)
    p, g = rng.random((2, 2, 3, 8, 8)).astype(np.float32)
    names = ["MAD", "MSE", "SAD", "Conn", "dtSSD", "MESSDdt"]  # Grad normalises per update, not additive
    whole = MetricAccumulator(names)
    whole.update(p, g)
    shards = [MetricAccumulator(names), MetricAccumulator(names)]
    shards[0].update(p[:, :1], g[:, :1])
    shards[1].update(p[:, 1:], g[:, 1:])
    merged = MetricAccumulator.merge([s.state() for s in shards])
    folded = MetricAccumulator(names)
    for s in shards:
        folded.add_state(s.state())
    for n in names:
        assert merged[n] == pytest.approx(whole.average()[n], rel=1e-6), n
        assert folded.average()[n] == pytest.approx(merged[n], rel=1e-12), n


# ----------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("pred,gt,trimap,match", [
    (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), None, "4-D"),
    (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 5)), None, "differs"),
    (np.full((1, 1, 4, 4), 2.0), np.zeros((1, 1, 4, 4)), None, r"\[0, 1\]"),
    (np.full((1, 1, 4, 4), np.nan), np.zeros((1, 1, 4, 4)), None, r"\[0, 1\]"),
    (np.zeros((1, 1, 4, 4)), -np.ones((1, 1, 4, 4)), None, r"\[0, 1\]"),
    (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 3)), "trimap shape"),
    (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)), np.full((1, 1, 4, 4), 3), "trimap: values"),
])
def test_bad_mattes_are_one_line_value_errors(pred, gt, trimap, match):
    with pytest.raises(ValueError, match=match) as err:
        compute_metrics(pred, gt, ["MAD", "MAD_fg"], trimap)
    assert "\n" not in str(err.value)


def test_bad_names_and_states_are_value_errors():
    with pytest.raises(ValueError, match="unknown"):
        MetricAccumulator(["MAD", "PSNR"])
    with pytest.raises(ValueError, match="no metric states"):
        MetricAccumulator.merge([])
    with pytest.raises(ValueError, match="different metrics"):
        MetricAccumulator.merge([MetricAccumulator(["MAD"]).state(), MetricAccumulator(["SAD"]).state()])
    with pytest.raises(ValueError, match="H, W"):
        make_trimap(np.zeros(5))
