"""Network behaviour beyond the fixtures: backends agree, any instance count, weights I/O."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from maggie.models import MaGGIe, MaggieConfig, WeightsError, fuse_clip, load_model, save_weights
from maggie.models.ops.morphology import compute_unknown, dilate, ellipse_kernel


def blob_masks(t: int, n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Ellipses of random size and position: binary masks [1, T, n, h, w] (moving slightly over time)."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((1, t, n, h, w), np.float32)
    for i in range(n):
        cy, cx = g.uniform(0.2, 0.8) * h, g.uniform(0.2, 0.8) * w
        ry, rx = g.uniform(0.1, 0.3) * h, g.uniform(0.08, 0.2) * w
        for f in range(t):
            out[0, f, i] = ((yy - cy - 2 * f) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return torch.from_numpy(out)


@pytest.fixture(scope="module")
def image_weights(parity_dir):
    return load_file(str(parity_dir / "maggie_image_weights.safetensors"))


@pytest.fixture(scope="module")
def video_weights(parity_dir, image_weights):
    sd = dict(image_weights)
    sd.update(load_file(str(parity_dir / "maggie_video_extra_weights.safetensors")))
    return sd


def run(model, image, mask, mode):
    model.set_refine_mode(mode)
    with torch.no_grad():
        return model(image, mask)


@pytest.mark.parametrize("mode", ["sparse", "tiles", "rulebook"])
@pytest.mark.parametrize("size,n", [((96, 128), 1), ((128, 96), 4), ((160, 224), 3)])
def test_sparse_backends_equal_dense_image(image_weights, size, n, mode):
    """Tiles (``sparse``) and the per-site rulebook compute the masked dense path's function."""
    model = load_model(image_weights)
    image = torch.randn(1, 1, 3, *size, generator=torch.Generator().manual_seed(1))
    mask = blob_masks(1, n, *size)
    sparse, dense = run(model, image, mask, mode), run(model, image, mask, "dense")
    assert 0 < sparse["detail_mask"].mean() < 1
    for k in ("alpha", "alpha_os4", "alpha_os1"):
        assert torch.allclose(sparse[k], dense[k], atol=2e-5), k
    assert sparse["alpha"].shape == (1, 1, n, *size)


@pytest.mark.parametrize("mode", ["sparse", "tiles", "rulebook"])
@pytest.mark.parametrize("t", [2, 4])
def test_sparse_backends_equal_dense_video(video_weights, t, mode):
    model = load_model(video_weights)
    image = torch.randn(1, t, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    mask = blob_masks(t, 3, 64, 96)
    sparse, dense = run(model, image, mask, mode), run(model, image, mask, "dense")
    for k in ("alpha", "temp_alpha", "alpha_os1"):
        assert sparse[k].shape == (1, t, 3, 64, 96)
        assert torch.allclose(sparse[k], dense[k], atol=2e-5), k


def test_sparse_backends_train_alike(image_weights):
    """In training the backends give the same losses' gradients and batch-norm statistics (over active sites)."""
    from maggie.models.maggie.decoder import DecoderState

    image = torch.randn(2, 1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    mask = torch.cat([blob_masks(1, 3, 64, 96, seed=s) for s in (1, 2)])
    mask = torch.nn.functional.pad(mask, (0, 0, 0, 0, 0, 7))  # training takes all 10 slots
    grads, stats = {}, {}
    for mode in ("tiles", "rulebook", "dense"):
        model = load_model(image_weights, refine_mode=mode).train()
        for m in model.modules():  # dropout would draw different masks for differently laid-out features
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        torch.manual_seed(0)
        out = model(image, mask, state=DecoderState(iteration=10**6, gt_alpha=mask.flatten(0, 1)))
        (out["alpha_os1"].square().mean() + out["alpha_os4"].mean()).backward()
        grads[mode] = {k: p.grad.clone() for k, p in model.named_parameters()
                       if p.grad is not None and k.startswith("decoder.layer")}
        stats[mode] = model.decoder.layer5[1].running_var.clone()
    assert grads["tiles"], "no refinement parameter got a gradient"
    for mode, tol in (("dense", 1e-3), ("rulebook", 5e-2)):  # rulebook: torch's BatchNorm1d sums another way
        for k, g in grads["tiles"].items():
            assert (g - grads[mode][k]).abs().max() <= tol * g.abs().max() + 1e-9, (mode, k)
        assert torch.allclose(stats["tiles"], stats[mode], rtol=1e-4), mode


def test_downsample_sites_is_a_strided_max_pool():
    from maggie.models.ops.sparse_conv import downsample_sites

    g = torch.Generator().manual_seed(5)
    for h, w in ((16, 16), (15, 17), (1, 1), (64, 33)):
        active = torch.rand(3, h, w, generator=g) > 0.9
        ref = torch.nn.functional.max_pool2d(active[:, None].float(), 3, 2, 1)[:, 0] > 0
        assert torch.equal(downsample_sites(active), ref), (h, w)


def test_tile_grid_keeps_only_tiles_with_active_sites():
    from maggie.models.ops.tile_conv import TileGrid

    s1 = torch.zeros(2, 128, 96, dtype=torch.bool)
    s1[0, 5:9, 60:70] = True  # across the boundary of tile columns 1 and 2 (x = 64)
    s1[1, 127, 0] = True  # a lone site in the last row
    coarse = [torch.nn.functional.max_pool2d(s1[:, None].float(), 2 ** k, 2 ** k)[:, 0] > 0 for k in (1, 2, 3)]
    grid = TileGrid([s1, *coarse], tile=32)
    assert grid.coords.tolist() == [[0, 0, 1], [0, 0, 2], [1, 3, 0]]
    none = 3  # the index of the all-zero tile
    assert grid.neighbours.tolist() == [[none] * 4 + [0, 1] + [none] * 3, [none] * 3 + [0, 1] + [none] * 4,
                                        [none] * 4 + [2] + [none] * 4]
    level = grid.levels[0]
    assert level.mask.shape == (3, 1, 32, 32) and level.mask.sum() == s1.sum()


def test_sparse_level_finds_neighbours_without_an_index_map():
    from maggie.models.ops.sparse_conv import SparseLevel

    g = torch.Generator().manual_seed(7)
    active = torch.rand(3, 13, 11, generator=g) > 0.7
    active[1] = False  # an item without sites
    level = SparseLevel(active)
    index = torch.full(active.shape, -1, dtype=torch.long)  # the brute-force map
    b, y, x = level.coords.unbind(1)
    index[b, y, x] = torch.arange(level.num_sites)
    for dy, dx in ((0, -1), (0, 1), (-1, 0), (1, 1), (-1, -1)):  # x = -1 and x = w would alias the next row
        qy, qx = y + dy, x + dx
        inside = (qy >= 0) & (qy < 13) & (qx >= 0) & (qx < 11)
        want = torch.where(inside, index[b, qy.clamp(0, 12), qx.clamp(0, 10)], -1)
        assert torch.equal(level.find(b, qy, qx), want), (dy, dx)
    none = SparseLevel(torch.zeros(2, 4, 4, dtype=torch.bool))
    assert torch.equal(none.find(*[torch.zeros(3, dtype=torch.long)] * 3), torch.full((3,), -1))
    dense = level.to_dense(torch.arange(level.num_sites, dtype=torch.float32)[:, None], -99.0)
    assert torch.equal(dense[:, 0], torch.where(active, index.float(), torch.tensor(-99.0)))


def test_tile_grid_tiles_of_a_map_not_divisible_by_the_tile():
    from maggie.models.ops.sparse_conv import downsample_sites
    from maggie.models.ops.tile_conv import TileGrid

    s1 = torch.zeros(1, 40, 70, dtype=torch.bool)
    s1[0, 39, 69] = True  # the last pixel: the grid's last, partial tile
    s2 = downsample_sites(s1)
    grid = TileGrid([s1, s2], tile=32)
    assert (grid.rows, grid.cols) == (2, 3) and grid.coords.tolist() == [[0, 1, 2]]
    assert grid.fill(s1) == 1 / (32 * 32)


def test_lazy_branch_per_site_and_on_tiles_equal_the_dense_branch(image_weights, monkeypatch):
    from maggie.models.ops import tile_conv
    from maggie.models.ops.spectral_norm import preserved_power_iteration

    model = load_model(image_weights)
    g = torch.Generator().manual_seed(11)
    for i, (c, size) in enumerate(((6, 40), (32, 20), (64, 10))):  # the OS1, OS2 and OS4 branches
        x = torch.randn(2, c, size, size + 6, generator=g).contiguous(memory_format=torch.channels_last)
        branch = tile_conv.LazyBranch(model.encoder.shortcut[i], x)
        active = torch.zeros(4, size, size + 6, dtype=torch.bool)  # two people per frame
        active[0, 0, :] = True  # the top row: the convolutions' zero padding is read
        active[1, 3:5, size // 2] = True
        active[2, :, -1] = True  # the last column
        active[3] = torch.rand(size, size + 6, generator=g) > 0.8
        with torch.no_grad():  # each call as in one evaluation forward (the same spectral-norm weights)
            with preserved_power_iteration(model):
                dense = branch.dense()
            b, y, xx = torch.nonzero(active).unbind(1)
            want = dense[b // 2, :, y, xx]
            for fill, path in ((1.1, "per site"), (-1.0, "tiles")):
                monkeypatch.setattr(tile_conv, "LAZY_SITE_MAX_FILL", fill)
                with preserved_power_iteration(model):
                    got = branch.at_sites(active, 2)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"branch {i}, {path}")
            with preserved_power_iteration(model):
                values, index = branch.per_site(active[2:3])
            ys, xs = torch.nonzero(active[2]).unbind(1)
            torch.testing.assert_close(values, dense[0, :, ys, xs].t(), rtol=1e-4, atol=1e-4)  # frame 0 of x
            assert torch.equal(index[0, ys + 1, xs + 1], torch.arange(ys.numel()))


def test_instance_embedding_of_binary_and_other_masks_is_the_reference_lookup():
    from maggie.models.maggie.encoder import ShortcutEncoder

    enc = ShortcutEncoder(num_mask=10, num_embed=3)
    g = torch.Generator().manual_seed(2)
    torch.nn.init.normal_(enc.mask_embed_layer.weight, generator=g)

    def lookup(masks):  # the reference: ids = (mask * id).long(), the mean embedding of the ids covering a pixel
        ids = (masks * torch.arange(1, masks.shape[1] + 1)[None, :, None, None]).long()
        covered = (ids > 0).float().unsqueeze(-1)
        return ((enc.mask_embed_layer(ids) * covered).sum(1) / (covered.sum(1) + 1e-6)).permute(0, 3, 1, 2)

    binary = (torch.rand(2, 4, 9, 7, generator=g) > 0.6).float()
    cases = {"binary": binary, "empty": torch.zeros(1, 3, 5, 5)}
    for value in (0.5, 1.0 - 2 ** -24, 2.0, 1e-45):  # not binary: the lookup's truncated ids
        odd = binary.clone()
        odd[0, 1, 2, 3] = value
        odd[1, 3, 0, 0] = value
        cases[f"a value {value}"] = odd
    with torch.no_grad():
        for name, masks in cases.items():
            torch.testing.assert_close(enc.embed_masks(masks), lookup(masks), msg=name)


def test_fast_reductions_equal_torch_any():
    from maggie.models.ops.reductions import any_along, has_nonzero

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 7), (1, 10, 33, 17)):
        b = torch.rand(*shape, generator=g) > 0.97
        for dim in (0, 1, -1, -2):
            assert torch.equal(any_along(b, dim), b.any(dim)), (shape, dim)
        assert torch.equal(any_along(b, (1, 2)), b.any(1).any(1))
        assert torch.equal(any_along(b[:, ::2], -1), b[:, ::2].any(-1))  # a strided view
    for x in (torch.zeros(4), torch.tensor([0.0, -1e-45]), torch.tensor([0.0, float("nan")]), torch.tensor([0.0, 2.0]),
              torch.zeros(0), torch.tensor([False, True]), torch.zeros(3, dtype=torch.bool), torch.tensor([0, 3])):
        assert has_nonzero(x) == bool(x.any()), x
    with pytest.raises(TypeError):
        any_along(torch.zeros(3), 0)


def test_more_than_ten_instances_in_groups(image_weights):
    model = load_model(image_weights)
    image = torch.randn(1, 1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    mask = blob_masks(1, 13, 64, 64, seed=5)
    with torch.no_grad():
        all13 = model(image, mask)["alpha"]
        first10 = model(image, mask[:, :, :10])["alpha"]
        last3 = model(image, mask[:, :, 10:])["alpha"]
    assert all13.shape[2] == 13
    assert torch.equal(all13[:, :, :10], first10)
    assert torch.equal(all13[:, :, 10:], last3)


def test_empty_masks_give_zero_mattes(image_weights):
    model = load_model(image_weights)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 3, 64, 64), torch.zeros(1, 1, 2, 64, 64))
    assert out["alpha"].abs().sum() == 0


def test_low_resolution_masks_are_upsampled(image_weights):
    model = load_model(image_weights)
    image = torch.randn(1, 1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    full = blob_masks(1, 2, 64, 64)
    os8 = full[..., ::8, ::8]
    with torch.no_grad():
        a = model(image, os8)["alpha"]
        b = model(image, torch.nn.functional.interpolate(os8[0], size=(64, 64), mode="nearest")[None])["alpha"]
    assert torch.equal(a, b)


def test_bad_input_shapes():
    model = MaGGIe().eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 1, 3, 50, 64), torch.zeros(1, 1, 1, 50, 64))
    with pytest.raises(ValueError, match=r"\[B,T,3,H,W\]"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 1, 64, 64))


def test_load_refuses_missing_and_unknown_keys(image_weights):
    sd = dict(image_weights)
    sd.pop("aspp.conv2.weight")
    sd["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        load_model(sd)
    msg = str(err.value)
    assert "missing 1 keys: aspp.conv2.weight" in msg and "unknown 1 keys: decoder.extra.weight" in msg


def test_detect_arch_and_round_trip(tmp_path, video_weights):
    model = load_model(video_weights)
    assert model.is_video
    path = tmp_path / "video.safetensors"
    save_weights(model, path)
    again = load_model(path)
    assert again.is_video
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_official_layout_file_and_pth(tmp_path, image_weights):
    path = tmp_path / "official.safetensors"
    save_file(image_weights, str(path))
    assert load_model(path).cfg.arch == "maggie_image"
    pth = tmp_path / "official.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in image_weights.items()}}, pth)
    assert load_model(pth).cfg.arch == "maggie_image"
    with pytest.raises(WeightsError, match="no such weights file"):
        load_model(tmp_path / "missing.safetensors")


def test_hub_id_with_local_stand_in(tmp_path, monkeypatch, image_weights):
    """A hub id resolves through huggingface_hub; here a local file stands in for the hub."""
    import huggingface_hub

    path = tmp_path / "model.safetensors"
    save_file(image_weights, str(path))
    calls = []

    def fake_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_model("chuonghm/maggie-image-him50k-cvpr24")
    assert calls == [("chuonghm/maggie-image-him50k-cvpr24", "model.safetensors")]
    assert model.cfg.arch == "maggie_image"


def test_hub_id_offline_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="cannot be reached"):
        load_model("chuonghm/maggie-image-him50k-cvpr24")


def test_fuse_clip_three_frames_by_hand():
    a = torch.tensor([0.1, 0.5, 0.9]).reshape(1, 3, 1, 1, 1)
    no_change = torch.zeros(1, 3, 1, 1, 1)
    # Nothing changes: frame 1 keeps frame 0's value only if backward agrees (0.9 != 0.1) -> own value.
    assert torch.allclose(fuse_clip(a, no_change, no_change)[0, :, 0, 0, 0], torch.tensor([0.1, 0.5, 0.5]))
    b = torch.tensor([0.3, 0.3, 0.3]).reshape(1, 3, 1, 1, 1)
    # Static matte: all agree, so the previous clip's value is carried over.
    prev = torch.full((1, 1, 1, 1), 0.3)
    assert torch.allclose(fuse_clip(b, no_change, no_change, prev)[0, :, 0, 0, 0], torch.tensor([0.3, 0.3, 0.3]))


def test_training_forward_gives_slot_outputs_and_attention_loss():
    torch.manual_seed(0)
    model = MaGGIe(MaggieConfig(max_inst=10)).train()
    image = torch.randn(2, 1, 3, 64, 64)
    mask = torch.zeros(2, 1, 10, 64, 64)
    mask[:, :, [1, 7]] = blob_masks(1, 2, 64, 64)[0]
    from maggie.models import DecoderState

    alpha = mask.clone()
    out = model(image, mask, state=DecoderState(iteration=1, gt_alpha=alpha.flatten(0, 1)))
    assert out["alpha"].shape == (2, 1, 10, 64, 64)
    assert out["alpha_os8"][:, :, [0, 2]].abs().sum() == 0  # empty slots are zeroed in training
    assert torch.isfinite(out["loss_atten"])
    out["alpha"].mean().backward()


def test_compute_unknown_matches_opencv():
    import cv2

    g = np.random.default_rng(0)
    alpha = (g.random((3, 40, 50)) > 0.97).astype(np.float32) * 0.5
    for k in (30, 27, 15, 8):
        ref = [cv2.dilate(((a > 1 / 255) & (a < 254 / 255)).astype(np.uint8), ellipse_kernel(k // 2)) for a in alpha]
        ours = compute_unknown(torch.from_numpy(alpha), k).numpy()
        assert (ours == np.stack(ref)).all(), k
    for size in range(2, 32):  # every row run and anchor case, sites at the borders included
        u = g.random((30, 37)) > 0.95
        u[0, 0] = u[-1, -1] = True
        ref = cv2.dilate(u.astype(np.uint8), ellipse_kernel(size))
        assert (dilate(torch.from_numpy(u)[None], size)[0].numpy() == ref).all(), size


@pytest.mark.parametrize("video", [False, True])
@pytest.mark.parametrize("size,n", [((96, 128), 1), ((128, 96), 4), ((160, 224), 3)])
def test_fusion_in_boxes_equals_the_full_maps(image_weights, video_weights, monkeypatch, size, n, video):
    """Evaluation squashes and fuses each person's OS4/OS1 mattes in the box of its detail region only:
    the same mattes, every output, as the full-map computation that export and training use."""
    from maggie.models.maggie import decoder

    model = load_model(video_weights if video else image_weights).eval()
    t = 3 if video else 1
    image = torch.randn(1, t, 3, *size, generator=torch.Generator().manual_seed(2))
    mask = blob_masks(t, n, *size, seed=3)
    boxed = run(model, image, mask, "sparse")
    monkeypatch.setattr(decoder, "_boxes_allowed", lambda: False)
    full = run(model, image, mask, "sparse")
    assert 0 < boxed["detail_mask"].mean() < 1
    for k in ("alpha", "alpha_os4", "alpha_os1", "alpha_os8"):
        assert torch.equal(boxed[k], full[k]), k


def test_dilation_in_boxes_equals_the_whole_map_dilation():
    """Small uncertain bands anywhere (corners, edges, none at all): the boxed dilation is OpenCV's."""
    import cv2

    from maggie.models.ops.morphology import dilate_in_boxes

    g = np.random.default_rng(1)
    maps = np.zeros((5, 60, 70), bool)
    maps[0, 0, 0] = maps[1, -1, -1] = True
    maps[2, 20:24, 30:33] = True
    maps[3] = g.random((60, 70)) > 0.995
    for size in (2, 7, 13, 15):
        ours = dilate_in_boxes(torch.from_numpy(maps), size).numpy()
        ref = np.stack([cv2.dilate(m.astype(np.uint8), ellipse_kernel(size)) for m in maps]) > 0
        assert (ours == ref).all(), size
        assert not ours[4].any()


def test_identical_masks_run_as_one_instance_and_share_its_matte():
    from maggie.inference.pipeline import distinct_masks, predict_frames

    torch.manual_seed(0)
    model = MaGGIe(MaggieConfig(refine_mode="dense")).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    a = np.zeros((64, 64), np.uint8)
    a[10:40, 10:30] = 1
    b = np.zeros((64, 64), np.uint8)
    b[20:60, 35:60] = 1
    masks = np.stack([a, b, a, np.zeros_like(a)])[None]
    assert distinct_masks(masks) == ([0, 1, 3], [0, 1, 0, 2])
    merged = predict_frames(model, image, masks, 64, torch.device("cpu"), merge_duplicates=True)
    alone = predict_frames(model, image, masks[:, [0, 1, 3]], 64, torch.device("cpu"))
    assert np.array_equal(merged[:, 0], merged[:, 2]) and np.allclose(merged[:, [0, 1, 3]], alone)
    plain = predict_frames(model, image, masks, 64, torch.device("cpu"))
    assert plain.shape == merged.shape


def test_folded_batch_norm_follows_weight_and_statistics_changes():
    """Inference folds each batch norm into its convolution and keeps the result: loading other weights in
    place, or other running statistics, must give the new network's output, not the first one's."""
    from maggie.models.ops.spectral_norm import conv_bn

    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        first = conv_bn(conv, bn, x)
        torch.testing.assert_close(first, bn(conv(x)), atol=1e-5, rtol=1e-5)
        conv.load_state_dict({"weight": torch.randn_like(conv.weight)})  # new weights only
        second = conv_bn(conv, bn, x)
        torch.testing.assert_close(second, bn(conv(x)), atol=1e-5, rtol=1e-5)
        assert (second - first).abs().max() > 0.1
        bn.running_mean.add_(0.5)  # new statistics only
        third = conv_bn(conv, bn, x)
        torch.testing.assert_close(third, bn(conv(x)), atol=1e-5, rtol=1e-5)
        assert (third - second).abs().max() > 0.1
    with torch.inference_mode():  # the predictor's mode: spectral-norm weights made here are inference tensors
        sn = MaGGIe(MaggieConfig()).eval().decoder.layer1[0]  # a transposed spectral-norm convolution first
        twin = copy.deepcopy(sn)  # each call of a spectral-norm layer is a power iteration: compare twins
        y = torch.randn(1, 512, 4, 4)
        torch.testing.assert_close(conv_bn(sn.conv1, sn.bn1, y), twin.bn1(twin.conv1(y)), atol=1e-5, rtol=1e-5)


def test_inference_weights_follow_the_input_layout():
    """In inference the folded and spectral-norm weights are kept channels-last for channels-last inputs (made once,
    not copied by every convolution) and give the same output; channels-first inputs keep channels-first weights;
    ASPP keeps the layout, so the decoder trunk runs channels-last too."""
    from maggie.models.ops.spectral_norm import conv_bn, is_channels_last, preserved_power_iteration

    torch.manual_seed(0)
    net = MaGGIe(MaggieConfig()).eval()
    for bn in (net.decoder.layer2[1].bn1, net.encoder.shortcut[3][2]):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.running_mean.uniform_(-1, 1)
    twin = copy.deepcopy(net)  # the reference, channels-first (a spectral-norm call iterates: twins, not reruns)
    x, feats = torch.randn(1, 128, 6, 5), torch.randn(1, 128, 6, 5)
    with torch.no_grad(), preserved_power_iteration(twin):
        want_fold = conv_bn(twin.decoder.layer2[1].conv1, twin.decoder.layer2[1].bn1, x)
        want_sn = twin.encoder.shortcut[3](feats)
    assert not is_channels_last(twin.decoder.layer2[1].bn1.__dict__["_folded"][2])
    assert want_fold.abs().amax() > 0.1 and want_sn.abs().amax() > 0.1
    x, feats = (t.contiguous(memory_format=torch.channels_last) for t in (x, feats))
    block, branch = net.decoder.layer2[1], net.encoder.shortcut[3]
    made = []
    for _ in range(2):  # two forwards: the channels-last weights are made by the first only
        with torch.inference_mode(), preserved_power_iteration(net):
            got_fold = conv_bn(block.conv1, block.bn1, x)
            got_sn = branch(feats)
            made.append((block.bn1.__dict__["_folded"][2], branch[0].module._layout[1]))
            assert all(is_channels_last(t) for t in (*made[-1], got_fold, got_sn))
            assert is_channels_last(net.aspp(torch.randn(1, 512, 4, 4).contiguous(memory_format=torch.channels_last)))
        torch.testing.assert_close(got_fold, want_fold, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_sn, want_sn, atol=1e-5, rtol=1e-5)
    assert made[0][0] is made[1][0] and made[0][1] is made[1][1]


def test_instance_decoder_without_attention_maps_gives_the_same_mattes():
    """Without an attention loss the IMD runs torch's fused attention and returns no maps; its logits, kernels and
    features equal those of the explicit attention that the loss needs (which still gives a finite loss)."""
    from maggie.models.maggie.imd import InstanceMatteDecoder

    torch.manual_seed(0)
    imd = InstanceMatteDecoder(128, 128, 2, 1, 64, 10).eval()
    feat = torch.randn(2, 128, 6, 8)
    masks = torch.zeros(1, 2, 3, 48, 64)
    masks[..., 8:30, 4:20] = 1
    masks[:, :, 1, 20:44, 30:60] = 1
    masks[:, :, 2, 0:10, 40:64] = 1
    with torch.no_grad():
        fused = imd(feat, masks)
        explicit = imd(feat, masks, gt_masks=torch.cat([masks, masks.new_zeros(1, 2, 7, 48, 64)], 2) > 0)
    assert "loss_atten" not in fused and torch.isfinite(explicit["loss_atten"])
    for key in ("logits", "kernels", "feat"):
        torch.testing.assert_close(fused[key], explicit[key], atol=1e-5, rtol=1e-5)
    assert fused["logits"].abs().amax() > 0.1
    tokens, pix = torch.randn(10, 1, 128), torch.randn(48, 1, 128)
    with torch.no_grad():
        out, attn = imd.final_token_feat_ca(tokens, pix, torch.zeros_like(tokens), torch.zeros_like(pix),
                                            need_weights=False)
        want, maps = imd.final_token_feat_ca(tokens, pix, torch.zeros_like(tokens), torch.zeros_like(pix))
    assert attn is None and maps.shape == (1, 10, 48)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
