"""FTP-VM: parity with the authors' code (tests/fixtures/ftpvm), the project adapter, its checkpoints.

``fixtures/ftpvm/ftpvm_fixture.npz`` holds the authors' inference on a seeded clip and
``ftpvm_train_fixture.npz`` one step of their training (forward, loss, backward), both with the weights
``fixtures/ftpvm/make_fixture.fixture_state_dict`` draws from the key names (see the folder's README).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maggie.models import DecoderState, build_model, detect_arch, load_model, save_weights, training_objective
from maggie.models.baselines.ftpvm import FTPVM
from maggie.models.baselines.ftpvm_adapter import IMAGENET_MEAN, IMAGENET_STD, FTPVMBaseline, unnormalize
from maggie.models.baselines.ftpvm_blocks import pad_divide_by
from maggie.models.baselines.ftpvm_loss import (
    ftpvm_loss,
    memory_trimap_maggie,
    scale_width,
    training_targets,
    trimap_from_alpha,
    trimap_kernel,
)

HERE = Path(__file__).parent / "fixtures" / "ftpvm"
spec = importlib.util.spec_from_file_location("ftpvm_fixture", HERE / "make_fixture.py")
fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture)

AUTHORS_KEYS = json.loads((HERE / "ftpvm_keys.json").read_text())  # their state_dict(): key -> shape
N_KEYS = 442
LOSS_KEYS = {"loss_seg_bce", "loss_seg_tv", "loss_focus_pha_l1", "loss_focus_pha_laplacian",
             "loss_focus_pha_coherence", "loss_collab_pha_l1", "loss_collab_pha_laplacian",
             "loss_collab_pha_coherence", "total"}


def authors_state_dict() -> dict[str, torch.Tensor]:
    """The fixture's weights laid out as the authors' checkpoint (``saves/ftpvm.pth``): from their key listing."""
    return {k: fixture.fixture_tensor(k, tuple(s), torch.long if k.endswith("num_batches_tracked") else torch.float32)
            for k, s in AUTHORS_KEYS.items()}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The fixtures were made on one thread.  The reduction order is then the same, which the bit-equal
    checks need; on two threads single steps differ by ~1e-7 and the deep gradient norms of the training
    step, which amplify it, by up to 4e-3 relative.  (These small tensors also run faster on one.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return authors_state_dict()


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(HERE / "ftpvm_fixture.npz"))


@pytest.fixture(scope="module")
def train_fx():
    return dict(np.load(HERE / "ftpvm_train_fixture.npz"))


@pytest.fixture(scope="module")
def model(weights):
    """The fixture's weights through the project's loader (eval mode); do not train it."""
    return load_model(weights)


# Floating-point results are bit-equal on the kind of CPU that made the fixtures; on one with AVX-512 and AMX
# (2026-12-03) oneDNN takes other convolution kernels and the single-step intermediates differ in their last bits
# (at most 8e-7 of the array's largest value, about 7 ulps).  That is allowed, 10x over; integer results (trimaps,
# structuring elements) stay exact.
FLOAT_ULP_SLACK = 1e-5


def assert_exact(ours: torch.Tensor, ref: np.ndarray, name: str) -> None:
    a = ours.detach().numpy().reshape(ref.shape)
    if np.array_equal(a, ref):
        return
    assert np.issubdtype(ref.dtype, np.floating), f"{name}: not equal ({ref.dtype})"
    d, scale = np.abs(a.astype(np.float64) - ref).max(), max(float(np.abs(ref).max()), 1.0)
    allowed = FLOAT_ULP_SLACK * scale
    assert d <= allowed, f"{name}: not bit-equal, max abs diff {d:.2e} (allowed {allowed:.1e})"


def assert_close(ours: torch.Tensor, ref: np.ndarray, name: str, mean: float = 1e-5, most: float = 1e-4) -> None:
    """The project's parity rule (mean abs diff, share off by > 1e-2), tightened, plus a bound on the max."""
    d = np.abs(ours.detach().numpy().reshape(ref.shape) - ref)
    assert d.mean() <= mean, f"{name}: mean abs diff {d.mean():.2e} > {mean:.0e}"
    assert d.max() <= most, f"{name}: max abs diff {d.max():.2e} > {most:.0e}"
    assert (d > 1e-2).mean() <= 1e-3, f"{name}: {(d > 1e-2).mean():.2%} of values off by > 1e-2"


def assert_rel(ours, ref, name: str, tol: float = 1e-5) -> None:
    a = torch.as_tensor(ours).detach().double().numpy()
    b = np.asarray(ref, dtype=np.float64).reshape(a.shape)
    r = np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)
    assert r <= tol, f"{name}: relative diff {r:.2e} > {tol:.0e}"


# -- the fixture's weights ------------------------------------------------------------------------


def test_weight_generator_is_unchanged(fx, train_fx):
    """Both fixtures were made with these weights: a drift of the generator would void every parity test."""
    sd = fixture.fixture_state_dict(build_model("ftpvm").state_dict())
    assert len(sd) == int(fx["n_keys"]) == int(train_fx["n_keys"]) == N_KEYS
    checksum = fixture.weights_checksum(sd)
    for name, ref in (("inference", fx["weights_checksum"]), ("training", train_fx["weights_checksum"])):
        assert abs(checksum - float(ref)) <= 1e-9 * checksum, f"{name} fixture: checksum {checksum} != {float(ref)}"


# -- inference parity ---------------------------------------------------------------------------


@pytest.mark.parametrize("tag,ratio", [("clip", 1.0), ("clip_ds05", 0.5)])
def test_clip_parity_with_the_authors_video_loop(fx, model, tag, ratio):
    """Their InferenceCoreRecurrentMemory (chunks of 2, GRU states carried) vs forward_clip; 0.5: guided filter."""
    frames = torch.from_numpy(fx["frames_u8"]).float() / 255
    with torch.no_grad():
        res = model.forward_clip(frames, torch.from_numpy(fx["trimap0"]), downsample_ratio=ratio,
                                 chunk=int(fx["chunk"]), return_all=True)
    assert res["alpha"].shape == (4, 1, 60, 90)  # their core padded the clip to 64 x 96
    assert_close(res["alpha"], fx[f"{tag}_alpha"], f"{tag} alpha")  # max 9.2e-6 through the guided filter
    assert_exact(res["trimap"], fx[f"{tag}_trimap"], f"{tag} trimap")
    assert_close(res["boundary"], fx[f"{tag}_boundary"], f"{tag} boundary", mean=1e-6, most=1e-6)
    a = fx[f"{tag}_alpha"]
    assert ((a > 0.01) & (a < 0.99)).mean() > 0.1 and (a > 0.99).mean() > 0.5  # a real matte, not all 0 or 1


def test_single_step_intermediates_are_bit_equal(fx, model):
    """One forward_with_memory on the padded clip: backbone, memory, fusion, logits, mattes, GRU states."""
    assert (fx["step_class_counts"] > 500).all()  # bg, unknown and fg all predicted: the fusion is exercised
    q = pad_divide_by(torch.from_numpy(fx["frames_u8"]).float() / 255, 16)[0][None]
    m_tri = pad_divide_by(torch.from_numpy(fx["trimap0"])[None], 16)[0][None]
    with torch.no_grad():
        feats = model.backbone(q)
        for i, f in enumerate(feats):
            assert_exact(f[0, 0], fx[f"step_feat{i}_frame0"], f"backbone feature {i}")
        key, value = model.encode_imgs_to_value(q[:, :1], m_tri)
        assert_exact(key[0], fx["step_mem_key"], "memory key feature")
        assert_exact(value[0], fx["step_mem_value"], "memory value")
        assert_exact(model.bottleneck_fuse(feats[-1], key, value)[0], fx["step_fused16"], "fused stride-16 feature")
        seg, mat, alpha, rec = model.forward_with_memory(q, key, value)
        assert_exact(seg[0], fx["step_seg_logits"], "trimap logits")
        assert_exact(mat[0], fx["step_boundary"], "boundary matte")
        assert_exact(alpha[0], fx["step_alpha"], "alpha")
        for name, r in zip(("r8", "r16", "r1", "r2"), [*rec[0], *rec[1]], strict=True):
            assert_exact(r[0], fx[f"step_rec_{name}"], f"GRU state {name}")
        # their training-style forward (memory in the query's backbone batch; FTPVMBaseline overrides forward),
        # with the given trimap replacing frame 0's classes, and the segmentation-only pass
        _, mat, alpha, _ = FTPVM.forward(model, q, q[:, :1], m_tri, replace_given_seg=True)
        assert_exact(alpha[0], fx["train_alpha_replace"], "alpha with replace_given_seg")
        assert_exact(mat[0], fx["train_boundary"], "boundary, training-style forward")
        seg = FTPVM.forward(model, q, q[:, :1], m_tri, segmentation_pass=True)[0]
        assert_exact(seg[0, 3], fx["segpass_logits_frame3"], "segmentation pass logits")
    assert not np.array_equal(fx["train_alpha_replace"], fx["step_alpha"])  # the replacement changed something


def test_trimap_helpers_equal_opencv(fx, train_fx):
    """trimap_from_alpha = their cv2 get_dilated_trimaps (every kernel shape); memory_trimap_maggie = MaGGIe's rule."""
    alpha0 = torch.from_numpy(fx["alphas_u8"][0]).float() / 255
    assert_exact(trimap_from_alpha(alpha0, int(fx["trimap_width"])), fx["trimap0"], "eval trimap, width 7")
    assert_exact(memory_trimap_maggie(alpha0), fx["maggie_trimap0"], "MaGGIe's memory trimap")
    assert not np.array_equal(fx["trimap0"], fx["maggie_trimap0"])
    kernels = [k for k in train_fx if k.startswith("kernel/")]
    assert len(kernels) == 60  # widths 3..31 x shapes 1..4, all the authors' training draws
    for key in kernels:
        _, width, shape = key.split("/")
        assert_exact(trimap_kernel(int(width), int(shape)), train_fx[key], f"structuring element {width}/{shape}")
    gt = torch.from_numpy(train_fx["gt_u8"][0]).float() / 255
    for shape in range(1, 5):
        assert_exact(trimap_from_alpha(gt, 13, shape=shape), train_fx[f"trimap_shape{shape}_w13"], f"shape {shape}")


# -- training parity ----------------------------------------------------------------------------


def test_training_step_parity(train_fx):
    """One step of their far_mat_pass + MatLossComputer + backward: outputs, 8 terms, total, gradients, BN."""
    model = FTPVM(backbone_run_unused=True)  # blocks 5-6 run (no_grad) so their BN statistics move as timm's
    model.load_state_dict(fixture.fixture_state_dict(model.state_dict()), strict=True)
    model.train()
    fg, bg, gt = (torch.from_numpy(train_fx[k]).float() / 255 for k in ("fg_u8", "bg_u8", "gt_u8"))
    rgb = fg * gt + bg * (1 - gt)
    assert_rel(rgb, train_fx["rgb"], "composited clip")
    targets = training_targets(gt, kernels=[tuple(int(v) for v in k) for k in train_fx["kernels"]])
    assert_exact(targets["trimap"], train_fx["trimap"], "training trimaps")
    out = model.forward_train(rgb, targets["memory_trimap"])
    for ours, ref in (("trimap_logits", "out_glance"), ("boundary", "out_focus"), ("collab", "out_collab")):
        assert_rel(out[ours], train_fx[ref], ours)
    losses = ftpvm_loss(out, gt, targets["label"])
    assert set(losses) == LOSS_KEYS
    for name, value in zip(train_fx["loss_names"], train_fx["loss_values"], strict=True):
        assert_rel(losses["total" if name == "total_loss" else f"loss_{name}"], value, f"loss {name}")
    losses["total"].backward()
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for name, norm in zip(train_fx["grad_names"], train_fx["grad_norms"], strict=True):
        assert_rel(params[name].grad.norm(), norm, f"gradient norm of {name}")
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values() if p.grad is not None))
    assert_rel(total, train_fx["grad_total_norm"], "norm of the whole gradient")
    for key in [k for k in train_fx if k.startswith(("grad/", "bn/"))]:
        kind, name = key.split("/", 1)
        assert_rel(params[name].grad if kind == "grad" else buffers[name], train_fx[key], key)
    no_grad = sorted(n for n, p in params.items() if p.grad is None)
    assert no_grad == sorted(train_fx["no_grad_params"]), "parameters without gradient differ from the authors'"


# -- the project adapter ------------------------------------------------------------------------


def project_clip(t: int = 3, h: int = 64, w: int = 96, seed: int = 3) -> tuple[torch.Tensor, ...]:
    """(ImageNet-normalised image [1,T,3,H,W], masks [1,T,3,H,W], alphas [1,T,3,H,W]): people in slots 0 and 2;
    slot 1 is empty in frame 0 and enters at frame 1."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.stack([0.5 + 0.3 * np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)])
    image, alpha = np.zeros((1, t, 3, h, w)), np.zeros((1, t, 3, h, w))
    for i in range(t):
        img = bg.copy()
        people = [(0, 28 + i, 24 + 3 * i, 18, 11, 0.2), (2, 34 - i, 72 - 2 * i, 14, 9, 0.7)]
        if i >= 1:
            people.append((1, 16, 50 + 2 * i, 10, 8, 0.45))
        for slot, cy, cx, ry, rx, tone in people:
            a = np.clip((1.0 - np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)) * 5.0, 0, 1)
            fg = np.stack([tone + 0.1 * c + 0.1 * np.sin((xx + yy) / 4) for c in range(3)])
            img = a * fg + (1 - a) * img
            alpha[0, i, slot] = a
        image[0, i] = np.clip(img + 0.02 * g.standard_normal(img.shape), 0, 1)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    alpha = torch.from_numpy(alpha).float()
    return torch.from_numpy((image - mean) / std).float(), (alpha > 0.5).float(), alpha


def test_adapter_eval_equals_forward_clip_per_instance(model):
    """One run per instance with frame 0's guidance; the slot empty in frame 0 gets exactly 0; first_alpha:
    MaGGIe's memory rule."""
    image, mask, alpha = project_clip()
    assert isinstance(model, FTPVMBaseline) and FTPVMBaseline.first_frame_guided
    assert mask[0, 0, 1].sum() == 0 and mask[0, 1:, 1].sum() > 0  # slot 1 appears only after frame 0
    with torch.no_grad():
        out = model(image, mask)["alpha"]
        out_first = model(image, mask, first_alpha=alpha[:, 0])["alpha"]
        rgb = unnormalize(image[0])
        width = scale_width(25, 64, 576)  # the authors' 25 px at 576 p, scaled to the frame
        dilation = scale_width(15, 64, 576)  # MaGGIe's 15 px at 576 p, likewise
        for slot in (0, 2):
            ref = model.forward_clip(rgb, trimap_from_alpha(mask[0, 0, slot], width))[:, 0]
            torch.testing.assert_close(out[0, :, slot], ref, rtol=0, atol=1e-5)
            ref = model.forward_clip(rgb, memory_trimap_maggie(alpha[0, 0, slot], dilation))[:, 0]
            torch.testing.assert_close(out_first[0, :, slot], ref, rtol=0, atol=1e-5)
    assert out.shape == out_first.shape == (1, 3, 3, 64, 96)
    assert (out[:, :, 1] == 0).all() and (out_first[:, :, 1] == 0).all()
    assert (out[:, :, [0, 2]] > 0.5).float().mean() > 0.05  # the instances are matted, not blank
    assert (out - out_first).abs().max() > 1e-2  # the two memories differ, so the comparison is not vacuous
    _, _, trimaps = model.memory_trimaps(mask[:, 0], alpha[:, 0])
    assert torch.equal(trimaps, memory_trimap_maggie(alpha[0, 0, [0, 2]], dilation))


@pytest.fixture(scope="module")
def trainable(weights):
    model = build_model("ftpvm")
    model.load_state_dict(weights, strict=True)
    return model.train()


def test_adapter_trains_through_the_registry(trainable):
    """The engine's call and objective: a finite loss whose gradient reaches the decoders; the memory trimap
    comes from the engine's gt_alpha (cfg.memory_from_alpha)."""
    image, mask, alpha = project_clip()
    batch = {"image": image, "mask": mask, "alpha": alpha}
    objective = training_objective("ftpvm")
    state = DecoderState(iteration=1, gt_alpha=alpha.flatten(0, 1))
    torch.manual_seed(0)
    out = trainable(batch["image"], batch["mask"], state=state)
    assert out["rows"].tolist() == [[0, 0], [0, 2]]
    assert out["collab"].shape == (2, 3, 1, 64, 96) and out["alpha"].shape == (1, 3, 3, 64, 96)
    assert torch.equal(out["alpha"][0, :, [0, 2]], out["collab"][:, :, 0].transpose(0, 1))
    assert (out["alpha"][:, :, 1] == 0).all()
    losses = objective(out, batch, None)
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_seg_tv"] > 0 and losses["loss_collab_pha_coherence"] > 0
    trainable.zero_grad(set_to_none=True)
    losses["total"].backward()
    for name in ("seg_project.conv.weight", "seg_decoder.decode4.gru.ih.0.weight", "mat_project.conv.weight",
                 "mat_decoder.decode1.gru.hh.0.weight", "trimap_fuse.gated_convs.3.1.weight"):
        grad = trainable.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, f"no gradient reaches {name}"
    # the memory is each row's frame-0 target trimap (gt_alpha's frame 0, the row's kernel), as the authors'
    rows = out["rows"]
    targets = training_targets(alpha[rows[:, 0], :, rows[:, 1]].unsqueeze(2),
                               kernels=[tuple(k) for k in out["trimap_kernels"].tolist()])
    with torch.no_grad():
        again = trainable.forward_train(unnormalize(image), targets["memory_trimap"], rows[:, 0])
        torch.manual_seed(0)
        from_mask = trainable(image, mask)  # no gt_alpha: the memory trimap comes from the mask
    assert trainable.cfg.memory_from_alpha
    assert torch.equal(again["collab"], out["collab"]) and torch.equal(again["trimap_logits"], out["trimap_logits"])
    assert torch.equal(from_mask["trimap_kernels"], out["trimap_kernels"])
    assert not torch.equal(from_mask["collab"], out["collab"])


def test_single_frame_clips(trainable, model):
    """The image stage trains on T=1 clips: the temporal terms are 0, not NaN; eval takes T=1 as well."""
    image, mask, alpha = (x[:, :1] for x in project_clip())
    batch = {"image": image, "mask": mask, "alpha": alpha}
    out = trainable(image, mask, state=DecoderState(iteration=1, gt_alpha=alpha.flatten(0, 1)))
    losses = training_objective("ftpvm")(out, batch, None)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_seg_tv"] == 0 and losses["loss_collab_pha_coherence"] == 0 and losses["total"] > 0
    trainable.zero_grad(set_to_none=True)
    losses["total"].backward()
    assert trainable.mat_project.conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        pred = model(image, mask)["alpha"]
        ref = model.forward_clip(unnormalize(image[0]), trimap_from_alpha(mask[0, 0, 2], scale_width(25, 64, 576)))
    assert pred.shape == (1, 1, 3, 64, 96) and (pred[:, :, 1] == 0).all()
    torch.testing.assert_close(pred[0, :, 2], ref[:, 0], rtol=0, atol=1e-5)


# -- checkpoints --------------------------------------------------------------------------------


def test_state_dict_layout_is_the_authors(weights):
    ours = build_model("ftpvm").state_dict()
    assert {k: list(v.shape) for k, v in ours.items()} == AUTHORS_KEYS  # their 442 keys and shapes
    assert list(ours) == list(AUTHORS_KEYS) and len(ours) == N_KEYS  # in their order
    assert all(ours[k].dtype == v.dtype for k, v in weights.items())
    assert detect_arch(weights) == "ftpvm"


def test_checkpoints_round_trip(weights, tmp_path):
    """save_weights / load_model, and the authors' checkpoint (a plain torch.save'd state dict)."""
    sd = weights
    model = build_model("ftpvm", max_long_side=512, chunk=4)
    model.load_state_dict(sd, strict=True)
    save_weights(model, tmp_path / "ftpvm.safetensors")
    torch.save(sd, tmp_path / "ftpvm.pth")  # saves/ftpvm.pth: torch.save(PNet.state_dict())
    for path, config in ((tmp_path / "ftpvm.safetensors", (512, 4)), (tmp_path / "ftpvm.pth", (1024, 8))):
        back = load_model(path)
        assert isinstance(back, FTPVMBaseline) and not back.training, path.name
        assert (back.cfg.max_long_side, back.cfg.chunk) == config, path.name  # the project's file keeps its config
        restored = back.state_dict()
        assert list(restored) == list(sd)
        assert all(torch.equal(restored[k], v) for k, v in sd.items()), f"{path.name}: weights changed"
    # their training checkpoints hold the network under "network", with stray refiner keys in old ones
    torch.save({"it": 1, "network": {**sd, "refiner.conv.weight": torch.zeros(1)}}, tmp_path / "ckpt.pth")
    net = FTPVM.from_checkpoint(str(tmp_path / "ckpt.pth"))
    assert torch.equal(net.mat_project.conv.weight, sd["mat_project.conv.weight"])
