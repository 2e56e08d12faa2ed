"""OTVM: parity with the authors' code (tests/fixtures/otvm), its training path, the adapter and checkpoints.

``fixtures/otvm/otvm_fixture.npz`` (evaluation) and ``otvm_train_fixture.npz`` (a stage-4 training
step) hold what the authors' code (Hongje/OTVM accc0fcc) gives with seeded weights; the weights are
rebuilt here from the key names by ``fixtures/otvm/make_fixture.py``'s ``seeded_state_dict``.  How
the files were made: ``fixtures/otvm/README.md``.  The model is large (74M parameters), so one
seeded network serves the whole module.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from maggie.models import DecoderState, build_model, detect_arch, load_model, save_weights
from maggie.models.baselines.otvm import load_authors_state_dict, trimap_from_alpha, trimap_from_mask
from maggie.models.baselines.otvm_adapter import OTVMBaseline, unnormalize
from maggie.models.baselines.otvm_loss import otvm_loss, training_trimaps
from maggie.models.registry import training_objective

HERE = Path(__file__).parent / "fixtures" / "otvm"
spec = importlib.util.spec_from_file_location("otvm_fixture_maker", HERE / "make_fixture.py")
maker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(maker)  # numpy and torch only at module level: the authors' code is not imported

# The port reproduces the authors' evaluation bit for bit (max abs diff 0 on one CPU thread).  1e-6
# leaves room for a last-ulp difference only: the random 50-layer networks amplify any change of float
# summation order about 1000x (two intra-op threads already give 4e-4 on the final alphas), so the
# module runs on one thread, as the fixtures were made (README.md).
EXACT = 1e-6
TRAIN_RTOL = 1e-5  # backward sums in another order than the authors' torch 2.14.1 (measured <= 1.6e-6)
# On a CPU whose instruction set makes oneDNN take other convolution kernels than the fixture machine's (seen on
# an AVX-512/AMX Xeon, 2026-12-03) the first convolutions already differ in their last bits and the random network
# amplifies that as two threads do: final alphas off by a mean 8e-6 to 1.8e-5, max 3.7e-4 to 6.8e-4; training
# outputs and gradients by up to 6.4e-4 relative.  There the project's parity rule (mean <= 1e-4) holds, with the
# max bounded at 5e-3 (relative, in training); where frame 0's FBA head is bit for bit the authors', 1e-6.
OTHER_KERNELS_MEAN, OTHER_KERNELS_MAX = 1e-4, 5e-3
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the fixtures were made; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fx():
    return np.load(HERE / "otvm_fixture.npz")


@pytest.fixture(scope="module")
def tfx():
    return np.load(HERE / "otvm_train_fixture.npz")


@pytest.fixture(scope="module")
def model():
    """``build_model("otvm")`` (an ``OTVMBaseline``, default config) with the fixtures' seeded weights, eval mode."""
    net = build_model("otvm")
    net.load_state_dict(maker.seeded_state_dict(net.state_dict()), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def adapter(model):
    """The same weights (shared tensors, no copy) under a short memory schedule, skip 3 / max 3: in a
    5-frame clip frame 1 is appended, frame 2 replaces it (rolling slot), frame 3 is appended (skip)."""
    net = build_model("otvm", memory_skip=3, memory_max=3)
    net.load_state_dict(model.state_dict(), assign=True)
    return net.eval()


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def assert_exact(got, ref: np.ndarray, name: str, same_kernels: bool = True) -> None:
    g, r = as_numpy(got), np.asarray(ref, np.float64)
    assert g.shape == r.shape, f"{name}: shape {g.shape}, the authors' {r.shape}"
    d = np.abs(g - r)
    message = f"{name}: max abs diff {d.max():.2e} (mean {d.mean():.2e}) from the authors' code"
    if same_kernels:
        assert d.max() <= EXACT, message
    else:
        assert d.mean() <= OTHER_KERNELS_MEAN and d.max() <= OTHER_KERNELS_MAX, message + " (this CPU's kernels)"


def assert_rel(got, ref, name: str, rtol: float = TRAIN_RTOL, same_kernels: bool = True) -> None:
    g, r = as_numpy(got), np.asarray(ref, np.float64)
    assert g.shape == r.shape, f"{name}: shape {g.shape}, the authors' {r.shape}"
    rtol = rtol if same_kernels else max(rtol, OTHER_KERNELS_MAX)
    scale = max(float(np.abs(r).max()), 1e-30)
    d = float(np.abs(g - r).max())
    assert d <= rtol * scale, f"{name}: max abs diff {d:.2e} = {d / scale:.1e} of the largest value (allowed {rtol})"


@pytest.fixture(scope="module")
def clip_a(model, fx):
    """Clip A through forward_clip with its intermediates, once for the module."""
    frames, tri0 = clip_inputs(fx, "A")
    return model.forward_clip(frames, tri0, 10, 5, return_intermediates=True)


@pytest.fixture(scope="module")
def same_kernels(clip_a, fx) -> bool:
    """Does this CPU compute the fixture machine's floats?  Frame 0's FBA head (the first convolutions) of clip A
    bit for bit (within 1e-6) says yes; then every evaluation array must be, else the looser bounds above."""
    return float(np.abs(as_numpy(clip_a[2][0]["fba"][0]) - fx["A_f0_fba"]).max()) <= EXACT


def clip_inputs(fx, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixture clip as the authors' loader gives it: RGB uint8 / 255 and the 0/128/255 trimap of frame 0."""
    frames = torch.from_numpy(fx[f"{name}_frames"]).float() * (1.0 / 255)
    return frames, torch.from_numpy(fx[f"{name}_first_trimap"]).float()[None] / 255.0


# -- evaluation parity ------------------------------------------------------------------------------


def test_eval_parity_clip_a_with_intermediates(clip_a, same_kernels, fx):
    """Clip A (6 frames 60x90, padded to 64x96, default schedule): every output and frame-0/1 intermediate."""
    alphas, trimaps, inter = clip_a
    assert_exact(alphas, fx["A_alpha"], "A final alpha", same_kernels)
    assert_exact(trimaps, fx["A_trimap"], "A refined trimap probabilities", same_kernels)
    for i in (0, 1):
        assert_exact(inter[i]["net_in"][0], fx[f"A_f{i}_net_in"], f"A frame {i} net_in")  # no convolution yet
        for key in ("fba", "fba_refined", "trimap_logits", "mem_key", "mem_val"):
            assert_exact(inter[i][key][0], fx[f"A_f{i}_{key}"], f"A frame {i} {key}", same_kernels)
    assert_exact(inter[1]["prop_logits"][0], fx["A_f1_prop_logits"], "A frame 1 propagated logits", same_kernels)
    assert "mem_key" not in inter[-1]  # the last frame is not memorised
    slots = [int(r["memory_slots"]) for r in inter[:-1]]
    assert slots == fx["A_memory_slots"][:-1].tolist(), f"memory slots per frame {slots}"
    # The random network is not degenerate, so equality says something.
    a = fx["A_alpha"]
    assert ((a > 0.01) & (a < 0.99)).mean() > 0.1 and fx["A_trimap"].max() < 0.99


def test_eval_parity_clip_b_every_memory_branch(model, same_kernels, fx):
    """Clip B (12 frames 52x60, skip 3 / max 3): the append, rolling-slot and drop branches of the schedule."""
    frames, tri0 = clip_inputs(fx, "B")
    skip, max_num = (int(v) for v in fx["B_schedule"])
    alphas, trimaps, inter = model.forward_clip(frames, tri0, skip, max_num, return_intermediates=True)
    assert_exact(alphas, fx["B_alpha"], "B final alpha", same_kernels)
    assert_exact(trimaps[:, 2], fx["B_trimap_fg"], "B refined foreground probability", same_kernels)
    slots = [int(r["memory_slots"]) for r in inter[:-1]]
    assert slots == fx["B_memory_slots"][:-1].tolist(), f"memory slots per frame {slots}"
    assert max(slots) == max_num and len(frames) > 3 * skip  # full memory, then frames dropped


def test_eval_parity_stage2_variant(same_kernels, fx):
    """Stage 2 (no refinement head, trimap-only memory), its own key layout, on clip A."""
    net = build_model("otvm", stage=2)
    assert not net.refinement and not any(k.startswith("NET.refine.") for k in net.state_dict())
    net.load_state_dict(maker.seeded_state_dict(net.state_dict()), strict=True)
    frames, tri0 = clip_inputs(fx, "A")
    alphas, trimaps = net.eval().forward_clip(frames, tri0)
    assert_exact(alphas, fx["S2_alpha"], "stage-2 final alpha", same_kernels)
    assert_exact(trimaps[:, 2], fx["S2_trimap_fg"], "stage-2 foreground probability", same_kernels)


def test_trimap_helpers_equal_the_authors(fx):
    """trimap_from_alpha is their make_trimap_gt (radius 12 and 5); trimap_from_mask made the fixture's trimap."""
    gt = torch.from_numpy(fx["gt_alpha"]).float()[None] / 255.0
    for r in (12, 5):
        ours = (trimap_from_alpha(gt, r)[0] * 2).round().to(torch.uint8).numpy()
        ref = fx[f"gt_trimap_r{r}"]
        assert np.array_equal(ours, ref), f"radius {r}: {(ours != ref).sum()} pixels differ"
    assert set(np.unique(fx["gt_trimap_r5"])) == {0, 1, 2}  # radius 12 covers all the foreground of this alpha
    cls = (trimap_from_mask(torch.from_numpy(fx["A_mask0"]).float()[None], 4)[0] * 2).round().long().numpy()
    ours = np.array([0, 128, 255], np.uint8)[cls]
    assert np.array_equal(ours, fx["A_first_trimap"]), f"{(ours != fx['A_first_trimap']).sum()} pixels differ"


# -- training parity --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_run(model, tfx):
    """The authors' stage-4 step on the fixture's batch (2 clips x 3 frames x 64x64): forward, loss with
    the true fg/bg, backward.  Keeps outputs, losses and the gradient figures; leaves no gradient behind."""
    fg = torch.from_numpy(tfx["fg_rgb"]).float() * (1.0 / 255)
    bg = torch.from_numpy(tfx["bg_rgb"]).float() * (1.0 / 255)
    a = torch.from_numpy(tfx["alpha"])
    image = fg * a + bg * (1.0 - a)  # their FullModel's composite, same order
    tri = torch.from_numpy(tfx["trimap"]).float()
    model.train()
    try:
        bn_training = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
        model.zero_grad(set_to_none=True)
        out = model.forward_train(image, tri[:, 0])
        losses = otvm_loss(out, a, tri, image, fg, bg)
        losses["total"].backward()
        params = dict(model.named_parameters())
        grads = {n: p.grad for n, p in params.items() if p.grad is not None}
        run = {
            "training": model.training, "bn_training": bn_training, "tri": tri,
            "out": {k: v.detach() for k, v in out.items()}, "losses": {k: v.detach() for k, v in losses.items()},
            "no_grad": sorted(set(params) - set(grads)),
            "norms": {n: g.norm() for n, g in grads.items()},
            "full": {n: grads[n].clone() for n in (k[5:] for k in tfx.files if k.startswith("grad:"))},
        }
        with torch.no_grad():
            run["alpha_only"] = otvm_loss(run["out"], a, tri, image)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return run


def test_training_trimaps_equal_the_authors(tfx):
    """training_trimaps with seeded draws is their make_trimap + VideoMatting108_Train's draws (two seeds)."""
    gt = torch.from_numpy(tfx["alpha_u8"]).float().div(255.0).unsqueeze(2)
    for k in (0, 1):
        tri, snapped = training_trimaps(gt, random.Random(int(tfx[f"rule{k}_seed"])), crop_ref=None)
        assert np.array_equal(tri.argmax(2).numpy(), tfx[f"rule{k}_classes"]), f"seed {k}: trimap classes"
        assert np.array_equal(snapped.numpy(), tfx[f"rule{k}_alpha"]), f"seed {k}: eps-snapped alpha"
    assert tfx["rule1_draws"][:, 2].any(), "the second seed takes the close-first branch"


def test_training_forward_parity(train_run, same_kernels, tfx):
    """Outputs of forward_train (BatchNorms frozen as their train.py) equal the authors' FullModel."""
    assert train_run["training"] and not train_run["bn_training"], f"BN in train mode: {train_run['bn_training']}"
    out = train_run["out"]
    for key in ("fba", "fba_refined", "trimap_logits", "prop_logits"):
        assert_rel(out[key], tfx[key], f"output {key}", same_kernels=same_kernels)
    assert_rel(out["alpha"], tfx["out_alphas"], "returned alphas", same_kernels=same_kernels)
    # Their returned trimaps: frame 0's ground truth, then the refined trimap probabilities.
    tri = train_run["tri"]
    preds = torch.cat([tri[:, :1], F.softmax(out["trimap_logits"][:, 1:], dim=2)], 1)
    assert_rel(preds, tfx["out_preds_trimap"], "returned trimaps", same_kernels=same_kernels)


def test_training_loss_parity(train_run, tfx):
    """The four losses, the total and every per-head part equal the authors' (fixture: per-frame values)."""
    losses = train_run["losses"]
    for key in ("loss_alpha_comp", "loss_lap", "loss_grad", "loss_trimap", "total", "trimap_ce_prop",
                "trimap_ce_refined"):
        assert_rel(losses[key], tfx[key], key)
    for head in ("dec", "ref"):
        for part in ("l1", "comp", "fb_comp", "grad_alpha", "excl", "lap_alpha"):
            assert_rel(losses[f"{head}_{part}"], tfx[f"{head}_{part}"].mean(), f"{head}_{part}")
        assert_rel(losses[f"{head}_fb_l1"], (tfx[f"{head}_fb_l1_f"] + tfx[f"{head}_fb_l1_b"]).mean(), f"{head}_fb_l1")
        assert_rel(losses[f"{head}_lap_fb"], (tfx[f"{head}_lap_f"] + tfx[f"{head}_lap_b"]).mean(), f"{head}_lap_fb")
        assert_rel(losses[f"{head}_tc_alpha"], tfx[f"{head}_tc_alpha"], f"{head}_tc_alpha")
        assert_rel(losses[f"{head}_tc_fb"], tfx[f"{head}_tc_f"] + tfx[f"{head}_tc_b"], f"{head}_tc_fb")
    # Without the layers (the project's batches) the alpha-only parts stay the authors'.
    alpha_only = train_run["alpha_only"]
    for head in ("dec", "ref"):
        for part in ("l1", "grad_alpha", "lap_alpha"):
            assert_rel(alpha_only[f"{head}_{part}"], tfx[f"{head}_{part}"].mean(), f"no fg/bg: {head}_{part}")
        assert_rel(alpha_only[f"{head}_tc_alpha"], tfx[f"{head}_tc_alpha"], f"no fg/bg: {head}_tc_alpha")
        assert f"{head}_excl" not in alpha_only and f"{head}_comp" not in alpha_only
    assert float(alpha_only["total"]) < float(losses["total"])


def test_training_gradient_parity(train_run, same_kernels, tfx):
    """Gradient norms (14 parameters, each network's combined norm) and three whole gradients equal the authors'."""
    norms = train_run["norms"]
    for name, ref in zip(tfx["grad_norm_names"].tolist(), tfx["grad_norms"], strict=True):
        assert_rel(norms[name], ref, f"gradient norm of {name}", same_kernels=same_kernels)
    for prefix, key in (("NET.", "grad_norm_net"), ("trimap.", "grad_norm_trimap")):
        combined = torch.stack([v for n, v in norms.items() if n.startswith(prefix)]).norm()
        assert_rel(combined, tfx[key], f"combined gradient norm of {prefix}*", same_kernels=same_kernels)
    for name, grad in train_run["full"].items():
        assert_rel(grad, tfx[f"grad:{name}"], f"gradient of {name}", same_kernels=same_kernels)
    assert train_run["no_grad"] == [], f"parameters without gradient: {train_run['no_grad'][:5]}"
    assert [x for x in tfx["params_without_grad"] if x] == []


# -- the adapter --------------------------------------------------------------------------------------


def blobs(t: int, n: int, h: int, w: int, absent: tuple[int, ...] = (), seed: int = 0
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised frames ``[1, T, 3, H, W]`` of ``n`` soft moving ellipses over a texture and
    their alphas ``[1, T, N, H, W]``; the slots in ``absent`` are missing from frame 0."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    colours = torch.rand(n, 3, 1, 1, generator=g, dtype=torch.float64)
    rgb, alpha = torch.zeros(t, 3, h, w, dtype=torch.float64), torch.zeros(t, n, h, w, dtype=torch.float64)
    for i in range(t):
        img = torch.stack([0.5 + 0.3 * torch.sin(0.3 * xx + 0.5 * i), 0.4 + 0.3 * torch.cos(0.2 * yy),
                           0.5 + 0.2 * torch.sin(0.1 * (xx - yy))])
        for k in range(n):
            if i == 0 and k in absent:
                continue
            cy, cx = h * (0.5 + 0.1 * np.sin(i + k)), w * (k + 1) / (n + 1) + i
            r = (((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.12 * w)) ** 2).sqrt()
            a = ((1.0 - r) / 0.4 + 0.5).clamp(0, 1)
            img = a * colours[k] + (1 - a) * img
            alpha[i, k] = a
        rgb[i] = img
    return ((rgb.float() - IMAGENET_MEAN) / IMAGENET_STD)[None], alpha.float()[None]


@pytest.fixture(scope="module")
def clip():
    """1 x 5 frames x 3 slots x 32x64; slot 1 is absent from frame 0 (it appears in frame 1)."""
    image, alpha = blobs(5, 3, 32, 64, absent=(1,))
    return image, (alpha > 0.5).float(), alpha


@pytest.fixture(scope="module")
def clip_out(adapter, clip):
    image, mask, _ = clip
    return adapter(image, mask)["alpha"]


def test_adapter_eval_equals_forward_clip_per_instance(adapter, clip, clip_out):
    """Eval forward = forward_clip by hand on the un-normalised frames with each frame-0 mask trimap; a slot
    empty in frame 0 is exactly zero."""
    image, mask, _ = clip
    assert adapter.cfg.memory_skip == 3 and adapter.cfg.memory_max == 3
    assert clip_out.shape == mask.shape
    assert adapter.instances(mask).tolist() == [[0, 0], [0, 2]]
    r = adapter.eval_radius(32, 64)
    rgb = unnormalize(image[0])
    assert (rgb - image[0] * IMAGENET_STD - IMAGENET_MEAN).abs().max() < 1e-6  # un-normalised, not clamped away
    for n in (0, 2):
        ref, _ = adapter.forward_clip(rgb, trimap_from_mask(mask[0, 0, n : n + 1], r), 3, 3)
        diff = (clip_out[0, :, n] - ref[:, 0]).abs().max()
        assert torch.equal(clip_out[0, :, n], ref[:, 0]), f"slot {n}: max diff {diff:.2e}"
        assert ((clip_out[0, :, n] > 0.01) & (clip_out[0, :, n] < 0.99)).any()
    assert torch.all(clip_out[0, :, 1] == 0), "slot 1 (empty in frame 0) must be exactly zero in every frame"
    assert mask[0, 1:, 1].sum() > 0  # although it appears later


def test_adapter_first_alpha_uses_trimap_from_alpha(adapter, clip, monkeypatch):
    """With first_alpha each run gets trimap_from_alpha of its frame-0 alpha, the frames and the schedule."""
    image, mask, alpha = clip
    calls = []

    def spy(self, frames, tri, skip, max_num):
        calls.append((frames, tri, skip, max_num))
        return torch.full((len(frames), 1, *frames.shape[-2:]), 0.25), None

    monkeypatch.setattr(OTVMBaseline, "forward_clip", spy)
    out = adapter(image, mask, first_alpha=alpha[:, 0])["alpha"]
    r = adapter.eval_radius(32, 64)
    assert [c[2:] for c in calls] == [(3, 3), (3, 3)]
    for (frames, tri, _, _), n in zip(calls, (0, 2), strict=True):
        assert torch.equal(frames, unnormalize(image[0]))
        assert torch.equal(tri, trimap_from_alpha(alpha[0, 0, n : n + 1][:, None], r)[:, 0]), f"slot {n}"
        assert not torch.equal(tri, trimap_from_mask(mask[0, 0, n : n + 1], r)), "the test cannot tell the rules apart"
    assert torch.all(out[0, :, [0, 2]] == 0.25) and torch.all(out[0, :, 1] == 0)


def test_adapter_streaming_equals_forward(adapter, clip, clip_out):
    """start/step frame by frame equals forward bit for bit; only the slots present in frame 0 are tracked."""
    image, mask, _ = clip
    state = adapter.start(image[0, 0], adapter.first_trimaps(mask[0, 0]))
    assert state.slots == [0, 2] and (state.skip, state.max_num) == (3, 3)
    frames, slots = [state.alpha], [[m[0].shape[2] for m in state.memories]]
    for t in range(1, image.shape[1]):
        a, state = adapter.step(image[0, t], state)
        frames.append(a.clone())
        slots.append([m[0].shape[2] for m in state.memories])
    # Memory frames after each step (the stream also memorises the last frame): 0 | 0,1 | 0,2 | 0,2,3 | 0,2,4.
    assert slots == [[1, 1], [2, 2], [2, 2], [3, 3], [3, 3]], f"memory slots per frame {slots}"
    stream = torch.stack(frames)
    assert torch.equal(stream, clip_out[0]), f"max diff {(stream - clip_out[0]).abs().max():.2e}"


def test_adapter_trimap_radius_and_memory_schedule_follow_the_frame_size(model):
    """The authors' 'medium' band (12 px at 1080p) scaled to the short side, at least 1; their large-frame schedule."""
    assert [model.eval_radius(*hw) for hw in ((32, 64), (576, 1024), (1080, 1920), (2160, 3840))] == [1, 6, 12, 24]
    assert model.memory_schedule(1080, 1920) == (10, 5) and model.memory_schedule(1200, 1600) == (20, 2)


def test_adapter_trains_through_the_registry_objective(model):
    """Train mode as the engine calls it (DecoderState.gt_alpha, objective(out, batch, None)): finite loss,
    gradients in both networks, the slot absent from frame 0 neither trained nor matted."""
    torch.manual_seed(0)
    image, alpha = blobs(2, 2, 64, 64, absent=(1,), seed=1)
    mask = (alpha > 0.5).float()
    batch = {"image": image, "mask": mask, "alpha": alpha}
    model.train()
    try:
        out = model(image, mask, state=DecoderState(iteration=1, gt_alpha=alpha.flatten(0, 1)))
        losses = training_objective("otvm")(out, batch, None)
        assert torch.isfinite(losses["total"]), {k: float(v) for k, v in losses.items()}
        losses["total"].backward()
        params = dict(model.named_parameters())
        assert [n for n, p in params.items() if p.grad is None] == [], "parameters the loss does not reach"
        for prefix in ("NET.", "trimap."):
            assert sum(float(p.grad.abs().sum()) for n, p in params.items() if n.startswith(prefix)) > 0, prefix
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    assert out["index"].tolist() == [[0, 0]]
    assert out["alpha"].shape == mask.shape and out["fba_refined"].shape == (1, 2, 7, 64, 64)
    assert torch.equal(out["alpha"][0, :, 0], out["alpha_folded"][0, :, 0].detach())
    assert torch.all(out["alpha"][0, :, 1] == 0)
    assert out["gt_trimap"].shape == (1, 2, 3, 64, 64) and torch.equal(out["image"], unnormalize(image))


def test_single_frame_clip_in_eval(model):
    """T = 1 (the image stage's input) in eval: one alpha-network pass per instance, no memory."""
    image, alpha = blobs(1, 2, 64, 64)
    mask = (alpha > 0.5).float()
    out = model(image, mask)["alpha"]
    ref, _ = model.forward_clip(unnormalize(image[0]), trimap_from_mask(mask[0, 0, 1:2], model.eval_radius(64, 64)))
    assert out.shape == (1, 1, 2, 64, 64) and torch.isfinite(out).all()
    assert torch.equal(out[0, :, 1], ref[:, 0])


def test_single_frame_clip_trains(model):
    """T = 1 in train mode: a finite loss (no propagated frame, so no propagation cross-entropy, whose mean
    over no frames would be NaN) whose gradient reaches the alpha network; the trimap network is unused."""
    torch.manual_seed(0)
    image, alpha = blobs(1, 2, 64, 64, seed=2)
    mask = (alpha > 0.5).float()
    model.train()
    try:
        out = model(image, mask, state=DecoderState(iteration=1, gt_alpha=alpha.flatten(0, 1)))
        assert out["prop_logits"].shape == (2, 0, 3, 64, 64)
        losses = training_objective("otvm")(out, {"image": image, "mask": mask, "alpha": alpha}, None)
        assert torch.isfinite(losses["total"]), {k: float(v) for k, v in losses.items()}
        assert torch.equal(losses["loss_trimap"], losses["trimap_ce_refined"])
        losses["total"].backward()
        for name in ("NET.encoder.conv1.weight", "NET.refine.pred.4.weight"):
            assert float(model.get_parameter(name).grad.abs().sum()) > 0, name
        assert model.trimap.model.Encoder_M.conv1_h.weight.grad is None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


# -- checkpoints ----------------------------------------------------------------------------------------


def test_state_dict_is_the_authors_layout(model):
    """OTVMBaseline's state dict is the authors' (785 keys, their order and shapes): s4_OTVM.pth loads unprefixed."""
    assert type(model) is OTVMBaseline and OTVMBaseline.first_frame_guided and OTVMBaseline.is_video
    authors = json.loads((HERE / "otvm_keys.json").read_text())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == authors, f"differ: {sorted(set(ours) ^ set(authors))[:8]}"
    assert list(ours) == list(authors) and len(ours) == 785
    assert detect_arch(model.state_dict()) == "otvm"


def test_project_weights_round_trip(adapter, tmp_path):
    """save_weights / load_model rebuild OTVMBaseline with its config and the same tensors."""
    save_weights(adapter, tmp_path / "otvm.safetensors")
    assert detect_arch(load_file(str(tmp_path / "otvm.safetensors"))) == "otvm"  # also without the metadata
    loaded = load_model(tmp_path / "otvm.safetensors")
    assert type(loaded) is OTVMBaseline and not loaded.training
    assert dataclasses.asdict(loaded.cfg) == dataclasses.asdict(adapter.cfg)
    sd = adapter.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("prefix", ["", "module."])
def test_authors_checkpoint_format_loads(model, tmp_path, prefix):
    """A torch.save({key: tensor}) file (their s4_OTVM.pth format, also DataParallel-prefixed) loads by detect_arch."""
    sd = model.state_dict()
    path = tmp_path / "s4_OTVM.pth"
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    loaded = load_model(path)
    assert type(loaded) is OTVMBaseline and loaded.cfg.stage == 4
    assert all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())
    # The port's own reader gives the same dict, strictly loadable.
    loaded.load_state_dict(load_authors_state_dict(path), strict=True)
