"""The test-time matte fusion equals the authors' code at every clip length.

``fixtures/fusion/fusion_clips.npz`` was made by running the post-processing of the authors'
``MaGGIe_Temp.forward`` on seeded mattes and change maps (``fixtures/fusion/make_fixture.py``).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from maggie.models import MaGGIe, MaggieConfig, fuse_clip
from maggie.models.ops.spectral_norm import preserved_power_iteration

FIXTURE = Path(__file__).parent / "fixtures" / "fusion" / "fusion_clips.npz"
LENGTHS = (1, 2, 3, 4, 5, 8, 30)


@pytest.fixture(scope="module")
def clips():
    return np.load(FIXTURE)


@pytest.mark.parametrize("t", LENGTHS)
@pytest.mark.parametrize("prev", ["noprev", "prev"])
def test_fusion_equals_the_authors_code(clips, t, prev):
    key = f"t{t}_{prev}"
    alpha = torch.from_numpy(clips[f"{key}_alpha"])
    dfw = torch.from_numpy(clips[f"{key}_diff_forward"])
    dbw = torch.from_numpy(clips[f"{key}_diff_backward"])
    prev_alpha = torch.from_numpy(clips[f"{key}_prev"]) if f"{key}_prev" in clips else None
    fused = fuse_clip(alpha, dfw, dbw, prev_alpha)
    if f"{key}_error" in clips:
        # The authors' code cannot fuse clips under 3 frames (it indexes frame 2): they come back unfused.
        assert "IndexError" in str(clips[f"{key}_error"])
        assert torch.equal(fused, alpha)
    else:
        ref = torch.from_numpy(clips[f"{key}_fused"])
        assert torch.equal(fused, ref)
        assert not torch.equal(ref, alpha)  # the fusion changed something, so equality is not vacuous


def test_fusion_touches_frames_one_and_two_only(clips):
    alpha = torch.from_numpy(clips["t8_prev_alpha"])
    fused = fuse_clip(alpha, torch.from_numpy(clips["t8_prev_diff_forward"]),
                      torch.from_numpy(clips["t8_prev_diff_backward"]), torch.from_numpy(clips["t8_prev_prev"]))
    assert torch.equal(fused[:, 0], alpha[:, 0]) and torch.equal(fused[:, 3:], alpha[:, 3:])
    assert not torch.equal(fused[:, 1:3], alpha[:, 1:3])


@pytest.mark.parametrize("t", [1, 2, 4, 5])
def test_video_network_fuses_clips_of_any_length(t):
    torch.manual_seed(0)
    model = MaGGIe(MaggieConfig(arch="maggie_video", max_inst=4)).eval()
    image = torch.randn(1, t, 3, 64, 64)
    mask = torch.zeros(1, t, 2, 64, 64)
    mask[..., 10:40, 8:30] = 1
    mask[:, :, 1] = mask[:, :, 1].roll(24, -1)
    with torch.no_grad():
        out = model(image, mask)
        with preserved_power_iteration(model):
            raw = model._forward_group(image, mask, None)  # the per-frame mattes before the fusion
    assert out["alpha"].shape == (1, t, 2, 64, 64)
    assert torch.equal(out["alpha"], fuse_clip(raw["alpha"], raw["diff_forward"], raw["diff_backward"]))
