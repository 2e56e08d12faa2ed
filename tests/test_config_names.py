"""params.yaml uses the reference configs' key names where it has an equivalent (README's table)."""

from __future__ import annotations

from pathlib import Path

from maggie.config.params import load_params

REPO = Path(__file__).resolve().parents[1]
# Leaf names of hmchuong/MaGGIe configs/maggie_image.yaml, and where they live here.
REFERENCE_LEAVES = {
    "dataset.train.image": ["crop", "max_inst", "short_size", "padding_crop_p", "flip_p", "gamma_p", "add_noise_p",
                            "jpeg_p", "affine_p", "binarized_kernel", "downscale_mask_p"],
    "model.image": ["arch", "loss_alpha_w", "loss_alpha_grad_w", "loss_alpha_lap_w", "loss_atten_w",
                    "loss_reweight_os8", "loss_dtSSD_w", "warmup_detail_iter", "encoder_args"],
    "train.image": ["max_iter", "batch_size", "seed", "val_iter", "log_iter", "vis_iter", "num_workers", "lr",
                    "betas", "weight_decay", "warmup_iters"],
    "test": ["metrics", "short_size"],
    "wandb": ["project", "entity"],
}


def test_reference_key_names_exist_in_params():
    params = load_params(REPO / "params.yaml")
    for where, leaves in REFERENCE_LEAVES.items():
        node = params
        for part in where.split("."):
            node = node[part]
        missing = [k for k in leaves if k not in node]
        assert not missing, f"{where}: {missing}"
        if where.startswith(("dataset", "model", "train")):
            video = params[where.split(".")[0]]
            for part in where.split(".")[1:-1]:
                video = video[part]
            assert not [k for k in leaves if k not in video["video"]], f"{where} (video stage)"
    assert "pretrained" in params["model"]["image"]["encoder_args"]
    readme = (REPO / "README.md").read_text()
    assert "model.image.encoder_args.pretrained" in readme
