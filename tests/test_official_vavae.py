"""Tests for loading official-layout VA-VAE checkpoints into AutoencoderKL."""
import argparse

import pytest
import torch
from safetensors.torch import save_file

from vavae_lab.errors import CheckpointError, ConfigError
from vavae_lab.tokenizer.autoencoder import AutoencoderKL
from vavae_lab.tokenizer.discriminator import NLayerDiscriminator
from vavae_lab.tokenizer.official import (
    DROPPED_PREFIXES, OFFICIAL_F16D32, infer_arch, load_official_vavae, official_layout_state_dict,
)

SMALL = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), z_channels=8, embed_dim=4,
             resolution=32, norm_groups=8)


def small_model(**kw):
    torch.manual_seed(0)
    model = AutoencoderKL(**{**SMALL, **kw}).eval()
    with torch.no_grad():  # move off the default init so that a wrongly loaded tensor shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_official_config_matches_the_released_model():
    assert OFFICIAL_F16D32 == dict(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                                   z_channels=32, embed_dim=32, resolution=256, in_channels=3, out_ch=3,
                                   dropout=0.0, norm_groups=32)


def test_round_trip_keeps_outputs_and_drops_training_state(tmp_path):
    model = small_model()
    ckpt = official_layout_state_dict(model)
    state = ckpt["state_dict"]
    for prefix in DROPPED_PREFIXES:
        assert any(k.startswith(prefix) for k in state), prefix
    assert state["linear_proj.weight"].shape == (1024, 4, 1, 1)
    path = tmp_path / "vavae.pt"
    torch.save(ckpt, path)
    loaded = load_official_vavae(path, **SMALL)
    assert not loaded.training
    assert set(loaded.state_dict()) == set(model.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = model.encode(x), loaded.encode(x)
        assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)
        assert torch.equal(model.decode_raw(a.mean), loaded.decode_raw(a.mean))


def test_raw_state_dict_and_safetensors_load(tmp_path):
    model = small_model()
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for name in ("raw.pt", "w.safetensors"):
        loaded = load_official_vavae(tmp_path / name, device=torch.device("cpu"), **SMALL)
        assert torch.equal(loaded.quant_conv.weight, model.quant_conv.weight)


def test_official_discriminator_entries_load_into_ours():
    state = official_layout_state_dict(small_model())["state_dict"]
    disc_state = {k[len("loss.discriminator."):]: v for k, v in state.items() if k.startswith("loss.discriminator.")}
    NLayerDiscriminator().load_state_dict(disc_state, strict=True)


def test_wrong_embed_dim_names_keys_and_suggests_arch(tmp_path):
    path = tmp_path / "d4.pt"
    torch.save(official_layout_state_dict(small_model()), path)
    with pytest.raises(CheckpointError) as info:
        load_official_vavae(path, **{**SMALL, "embed_dim": 16})
    message = str(info.value)
    assert "shape mismatches (3)" in message
    assert "quant_conv.weight: file (8, 16, 1, 1) vs model (32, 16, 1, 1)" in message
    assert "post_quant_conv.weight" in message
    assert "embed_dim=4" in message and "load_official_vavae(path, embed_dim=4)" in message


def test_wrong_depth_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "deep.pt"
    torch.save(official_layout_state_dict(small_model(num_res_blocks=2)), path)
    with pytest.raises(CheckpointError) as info:
        load_official_vavae(path, **SMALL)
    message = str(info.value)
    assert "unexpected keys" in message and "decoder.up.0.block.2.conv1.bias" in message
    assert "missing keys" not in message
    assert "num_res_blocks=2" in message


def test_default_arch_rejects_a_small_file(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(official_layout_state_dict(small_model()), path)
    with pytest.raises(CheckpointError, match="missing keys") as info:
        load_official_vavae(path)
    assert "ch=32" in str(info.value) and "ch_mult=(1, 2, 2)" in str(info.value)


def test_missing_file_says_where_to_download(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_official_vavae(tmp_path / "nope.pt")
    message = str(info.value)
    assert "nope.pt" in message
    assert "https://huggingface.co/hustvl/vavae-imagenet256-f16d32-dinov2" in message
    assert "vavae-imagenet256-f16d32-dinov2.pt" in message


def test_pickled_objects_are_refused_with_a_conversion_hint(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": small_model().state_dict(), "hparams": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(CheckpointError, match="weights_only=False"):
        load_official_vavae(path, **SMALL)


def test_unrelated_or_corrupt_files_raise_checkpoint_error(tmp_path):
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no autoencoder weights"):
        load_official_vavae(tmp_path / "other.pt", **SMALL)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_official_vavae(tmp_path / "broken.pt", **SMALL)


def test_unknown_override_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="z_dim"):
        load_official_vavae(tmp_path / "x.pt", z_dim=4)


def test_infer_arch_reads_the_architecture_off_the_weights():
    model = small_model(num_res_blocks=2, attn_resolutions=(16, 8))
    assert infer_arch(model.state_dict(), resolution=32) == dict(
        ch=32, in_channels=3, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16, 8), z_channels=8,
        embed_dim=4, out_ch=3,
    )
