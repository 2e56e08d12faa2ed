"""Starting the encoder from GCA-Matting's pretrained ResNet-34 (checkpoints in its layout made here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maggie.engine.pretrained_encoder import (
    REFERENCE_PATH,
    load_pretrained_encoder,
    read_encoder_checkpoint,
    resolve_pretrained,
)
from maggie.models.maggie.encoder import ShortcutEncoder
from maggie.models.weights import WeightsError


def gca_checkpoint(path: Path, seed: int = 7, drop: str | None = None, reshape: str | None = None) -> dict:
    """A checkpoint laid out like model_best_resnet34_En_nomixup.pth: {'state_dict': {'module.<key>': ...}}
    with the ResNet-34-D trunk, an RGB stem and a classifier head, but no shortcuts."""
    torch.manual_seed(seed)
    donor = ShortcutEncoder(num_mask=10, num_embed=3)
    for p in donor.parameters():
        torch.nn.init.normal_(p)
    sd = {k: v.clone() for k, v in donor.state_dict().items()
          if not k.startswith(("shortcut.", "mask_embed_layer."))}
    # GCA-Matting's ImageNet encoder reads RGB only: a 3-channel stem, and a classifier head.
    sd["conv1.module.weight_bar"], sd["conv1.module.weight_v"] = torch.randn(32, 3, 3, 3), torch.randn(27)
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    if drop:
        del sd[drop]
    if reshape:
        sd[reshape] = torch.randn(3, 3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 30, "best_prec1": 0.7}, path)
    return sd


def test_trunk_is_loaded_and_stem_shortcuts_embedding_keep_their_init(tmp_path):
    ckpt = gca_checkpoint(tmp_path / "gca.pth")
    enc = ShortcutEncoder(num_mask=10, num_embed=3)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    kept = load_pretrained_encoder(enc, tmp_path / "gca.pth")
    after = enc.state_dict()
    for key in ("layer1.0.conv1.module.weight_bar", "layer_bottleneck.1.bn2.running_var", "bn3.weight",
                "conv2.module.weight_u", "layer3.0.downsample.1.module.weight_bar"):
        assert torch.equal(after[key], ckpt[key]), key
    # The stem reads other channels in GCA-Matting: its weights stay ours, as in the reference.
    assert torch.equal(after["conv1.module.weight_bar"], before["conv1.module.weight_bar"])
    assert torch.equal(after["conv1.module.weight_v"], before["conv1.module.weight_v"])
    assert torch.equal(after["shortcut.2.0.module.weight_bar"], before["shortcut.2.0.module.weight_bar"])
    assert torch.equal(after["mask_embed_layer.weight"], before["mask_embed_layer.weight"])
    assert "conv1.module.weight_bar" in kept and "mask_embed_layer.weight" in kept
    assert not any(k.startswith("layer") for k in kept)
    # Parameters were written in place: the module's forward uses the loaded weights.
    assert torch.equal(enc.layer2[0].conv1.module.weight_bar.detach(), ckpt["layer2.0.conv1.module.weight_bar"])


def test_stacked_mask_encoder_loads_the_same_trunk(tmp_path):
    ckpt = gca_checkpoint(tmp_path / "gca.pth")
    enc = ShortcutEncoder(num_mask=10, num_embed=0)  # MGM's 13-channel stem: the 6-channel one cannot fit
    load_pretrained_encoder(enc, tmp_path / "gca.pth")
    assert torch.equal(enc.state_dict()["layer3.2.conv2.module.weight_bar"], ckpt["layer3.2.conv2.module.weight_bar"])


def test_missing_and_mismatched_keys_are_listed(tmp_path):
    gca_checkpoint(tmp_path / "missing.pth", drop="layer2.1.bn1.weight")
    with pytest.raises(WeightsError, match=r"1 encoder keys missing \(layer2\.1\.bn1\.weight\)"):
        load_pretrained_encoder(ShortcutEncoder(), tmp_path / "missing.pth")
    gca_checkpoint(tmp_path / "shape.pth", reshape="layer1.0.bn1.bias")
    with pytest.raises(WeightsError, match=r"layer1\.0\.bn1\.bias \(3, 3\) vs ours \(64,\)"):
        load_pretrained_encoder(ShortcutEncoder(), tmp_path / "shape.pth")
    torch.save({"state_dict": {"module.backbone.stem.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a ResNet-34-D matting encoder"):
        load_pretrained_encoder(ShortcutEncoder(), tmp_path / "other.pth")


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such pretrained encoder checkpoint"):
        read_encoder_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
        read_encoder_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "ints.pth")
    with pytest.raises(WeightsError, match="state_dict of tensors"):
        read_encoder_checkpoint(tmp_path / "ints.pth")


def test_pretrained_setting_values():
    assert resolve_pretrained(False) is None and resolve_pretrained("") is None and resolve_pretrained(None) is None
    assert resolve_pretrained(True) == Path(REFERENCE_PATH)
    assert resolve_pretrained("weights/enc.pth") == Path("weights/enc.pth")
    with pytest.raises(WeightsError):
        resolve_pretrained(3)
