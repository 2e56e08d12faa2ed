"""Training engine: deterministic batches, two-process training in sync, exact resume after a kill."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_project import env, make_data, make_project, run

from maggie.engine.build import step_indices


def test_step_indices_cover_each_epoch_once():
    size, batch = 7, 3
    seen = [i for step in range(7) for i, _ in step_indices(11, step, batch, size)]  # 21 = 3 epochs
    for e in range(3):
        assert sorted(seen[e * size:(e + 1) * size]) == list(range(size))
    assert step_indices(11, 5, batch, size) == step_indices(11, 5, batch, size)
    assert step_indices(11, 5, batch, size) != step_indices(12, 5, batch, size)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    overrides = {"train": {"image": {"max_iter": 6, "val_iter": 100, "batch_size": 4}}}
    project = make_project(tmp_path_factory.mktemp("engine"), overrides)
    make_data(project)
    return project


def curve(path: Path) -> dict[int, float]:
    with path.open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_two_processes_end_with_equal_weights(tiny, tmp_path):
    out = tmp_path / "ddp"
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "maggie.stages.train_image", "--params", "params.yaml", "--max-iter", "2", "--out-dir", str(out)], tiny)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2
    sums = summary["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]


def test_resume_after_kill_gives_the_same_losses(tiny, tmp_path):
    full = tmp_path / "full"
    run([sys.executable, "-m", "maggie.stages.train_image", "--params", "params.yaml", "--out-dir", str(full)],
        tiny)
    reference = curve(full / "train_curve.csv")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "maggie.stages.train_image", "--params", "params.yaml", "--out-dir",
           str(killed)]
    proc = subprocess.Popen(cmd, cwd=tiny, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "ckpt" / "last_state.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.exists():
            try:
                if torch.load(state, weights_only=True)["step"] >= 3:
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(state, weights_only=True)["step"]
    assert 3 <= step_at_kill < 6, "the run should have been killed part-way"
    run(cmd, tiny)  # resumes from the last checkpoint
    resumed = curve(killed / "train_curve.csv")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in reference:
        assert resumed[step] == pytest.approx(reference[step], rel=0, abs=1e-6), step


def test_image_stage_starts_from_a_pretrained_matting_encoder(tiny, tmp_path):
    from safetensors.torch import load_file
    from test_pretrained_encoder import gca_checkpoint

    from maggie.config.params import load_params
    from maggie.config.presets import deep_merge

    ckpt = gca_checkpoint(tmp_path / "gca.pth")
    params = deep_merge(load_params(tiny / "params.yaml"),
                        {"model": {"image": {"encoder_args": {"pretrained": str(tmp_path / "gca.pth")}}}})
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    out = tmp_path / "pre"
    res = run([sys.executable, "-m", "maggie.stages.train_image", "--params", str(tmp_path / "params.yaml"),
               "--max-iter", "1", "--out-dir", str(out)], tiny)
    assert "encoder initialised from" in res.stderr
    weights = load_file(str(out / "best.safetensors"))
    # Batch-norm running statistics move by one momentum step, the weights by at most ~lr.
    key = "encoder.layer2.1.conv2.module.weight_bar"
    assert torch.allclose(weights[key], ckpt["layer2.1.conv2.module.weight_bar"], atol=1e-3)

    gca_checkpoint(tmp_path / "bad.pth", drop="layer1.0.bn1.weight")
    params["model"]["image"]["encoder_args"]["pretrained"] = str(tmp_path / "bad.pth")
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    bad = subprocess.run([sys.executable, "-m", "maggie.stages.train_image", "--params",
                          str(tmp_path / "params.yaml"), "--max-iter", "1", "--out-dir", str(tmp_path / "bad")],
                         cwd=tiny, env=env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("train_image: error: ")
    assert "layer1.0.bn1.weight" in bad.stderr and "Traceback" not in bad.stderr


def test_warm_start_is_float16_checked_and_loaded_in_order(tmp_path):
    """The shipped warm start: fp16 files with checksums; the video stage takes its temporal modules on top
    of the image stage's weights; a damaged file is refused in one line."""
    from maggie.config.methods import init_sources
    from maggie.engine.checkpoints import init_weights, video_network_from
    from maggie.engine.warm_start import TEMPORAL_FILE, export_fp16
    from maggie.errors import WeightsError
    from maggie.files import sha256_file
    from maggie.models import MaGGIe, MaggieConfig, save_weights
    from maggie.models.registry import VIDEO_ONLY_PREFIXES

    torch.manual_seed(0)
    image, video = MaGGIe(MaggieConfig(arch="maggie_image")), MaGGIe(MaggieConfig(arch="maggie_video"))
    save_weights(image, tmp_path / "image.safetensors")
    save_weights(video, tmp_path / "video.safetensors")
    warm = tmp_path / "pretrain"
    export_fp16(tmp_path / "video.safetensors", warm / TEMPORAL_FILE, keep=lambda k: k.startswith(VIDEO_ONLY_PREFIXES))
    (warm / "SHA256SUMS").write_text(f"{sha256_file(warm / TEMPORAL_FILE)}  {TEMPORAL_FILE}\n")
    from safetensors.torch import load_file

    temporal = load_file(str(warm / TEMPORAL_FILE))
    assert temporal and all(k.startswith(VIDEO_ONLY_PREFIXES) for k in temporal)
    assert all(v.dtype == torch.float16 for v in temporal.values() if v.is_floating_point())

    params = {"train": {"image": {"out_dir": str(tmp_path / "img")},
                        "video": {"init": ["image", str(warm / TEMPORAL_FILE)]}}}
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "best.safetensors").write_bytes((tmp_path / "image.safetensors").read_bytes())
    sources = init_sources(params, "video")
    assert sources == [str(tmp_path / "img" / "best.safetensors"), str(warm / TEMPORAL_FILE)]
    fresh = video_network_from(*sources)   # how benchmarks and warm_start.video_metrics read a video network
    assert not fresh.training and fresh.cfg.arch == "maggie_video"
    got = fresh.state_dict()
    key_img, key_tmp = "decoder.layer1.0.conv1.module.weight_bar", next(iter(temporal))
    assert torch.equal(got[key_img], image.state_dict()[key_img])
    assert torch.allclose(got[key_tmp], video.state_dict()[key_tmp], atol=1e-3)

    data = bytearray((warm / TEMPORAL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (warm / TEMPORAL_FILE).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum differs"):
        init_weights(fresh, str(warm / TEMPORAL_FILE))


def test_the_image_part_of_a_video_network_exports_as_an_image_network(tmp_path):
    """Phase 3 of the warm start trains the whole video network: its image file is that network less the
    temporal modules, loadable as an image network."""
    from maggie.engine.warm_start import IMAGE_FILE, export_fp16
    from maggie.models import MaGGIe, MaggieConfig, load_model, save_weights
    from maggie.models.registry import VIDEO_ONLY_PREFIXES

    torch.manual_seed(0)
    video = MaGGIe(MaggieConfig(arch="maggie_video"))
    save_weights(video, tmp_path / "video.safetensors")
    info = export_fp16(tmp_path / "video.safetensors", tmp_path / IMAGE_FILE,
                       keep=lambda k: not k.startswith(VIDEO_ONLY_PREFIXES), arch="maggie_image")
    assert info["arch"] == "maggie_video"  # what the source was
    image = load_model(tmp_path / IMAGE_FILE)
    assert image.cfg.arch == "maggie_image" and not image.is_video
    key = "decoder.layer1.0.conv1.module.weight_bar"
    assert torch.allclose(image.state_dict()[key], video.state_dict()[key], atol=1e-3)

def test_train_only_freezes_the_rest_and_its_batch_norm_statistics():
    from maggie.engine.build import select_trainable, train_mode
    from maggie.errors import ParamsError
    from maggie.models import MaGGIe, MaggieConfig

    model = MaGGIe(MaggieConfig(arch="maggie_video"))
    total = sum(p.numel() for p in model.parameters())
    count = select_trainable(model, ["decoder.os8_temp_module.", "decoder.diff_module."])
    assert 0 < count < total / 10
    assert all(p.requires_grad == n.startswith(("decoder.os8_temp_module.", "decoder.diff_module."))
               for n, p in model.named_parameters())
    train_mode(model)
    assert not model.encoder.bn1.training and model.decoder.diff_module[1].training
    with pytest.raises(ParamsError, match="no parameter starts with 'nope.'"):
        select_trainable(model, ["nope."])


def test_frozen_bn_stats_keeps_running_statistics_while_parameters_train():
    from maggie.engine.build import select_trainable, train_mode
    from maggie.models import MaGGIe, MaggieConfig

    model = MaGGIe(MaggieConfig(arch="maggie_image", max_inst=2))
    select_trainable(model, [])
    train_mode(model, frozen_bn_stats=True)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns) and model.decoder.training
    assert all(p.requires_grad for m in bns for p in m.parameters())
    bn = model.encoder.bn1
    before = bn.running_mean.clone()
    bn(torch.randn(4, bn.num_features, 8, 8) + 3.0).mean().backward()
    assert torch.equal(bn.running_mean, before)
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    train_mode(model)
    assert all(m.training for m in bns)


def test_warm_start_remeasure_updates_its_metrics_only(tmp_path, monkeypatch):
    """``--remeasure``: the shipped files and their checksums stay; the metrics are this checkout's evaluation's."""
    import json

    from maggie.engine import warm_start

    out = tmp_path / "pretrain"
    out.mkdir()
    (out / "maggie_default_image.safetensors").write_bytes(b"image")
    record = {"command": "c", "image": {"file": "maggie_default_image.safetensors", "metrics": {"old": 1}},
              "video": {"file": "maggie_default_temporal.safetensors", "metrics": {"old": 2}}, "sha256": {"x": "y"}}
    (out / "warm_start.json").write_text(json.dumps(record))
    seen = []
    monkeypatch.setattr(warm_start, "load_params", lambda path: {"from": path})
    monkeypatch.setattr(warm_start, "image_metrics", lambda w, p: seen.append((w.name, p)) or {"new": 1})
    monkeypatch.setattr(warm_start, "video_metrics", lambda i, t, p: seen.append((i.name, t.name)) or {"new": 2})
    assert warm_start.main(["--remeasure", "--out", str(out), "--params", "p.yaml"]) == 0
    got = json.loads((out / "warm_start.json").read_text())
    assert got["image"]["metrics"] == {"new": 1} and got["video"]["metrics"] == {"new": 2}
    assert got["sha256"] == {"x": "y"} and got["command"] == "c" and "--remeasure" in got["measured_with"]
    assert seen == [("maggie_default_image.safetensors", {"from": "p.yaml"}),
                    ("maggie_default_image.safetensors", "maggie_default_temporal.safetensors")]
    assert (out / "maggie_default_image.safetensors").read_bytes() == b"image"
    assert torch.is_grad_enabled(), "main() must not switch autograd off for the rest of the process"
