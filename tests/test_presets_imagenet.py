"""The ImageNet presets build models of the paper's sizes (on the meta device, so no memory is used) and carry its recipe."""
from dataclasses import replace

import pytest
import torch

from vavae_lab.presets import IMAGENET_TRAIN_IMAGES, PRESETS, get_preset
from vavae_lab.tokenizer.build import build_autoencoder
from vavae_lab.diffusion.build import build_dit_for

LATENT = (32, 16, 16)  # f16d32 latents of a 256 px image


def _dit(preset: str):
    with torch.device("meta"):
        return build_dit_for(get_preset(preset), LATENT, 1000)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_lightningdit_xl_has_the_official_parameter_count():
    model = _dit("imagenet256_lightningdit_xl_64ep")
    assert next(model.parameters()).device.type == "meta"
    assert _count(model) == 674_961_824
    assert _count(model) + model.pos_embed.numel() == 675_256_736  # the count printed by the official code


def test_va_vae_f16d32_has_the_official_parameter_count():
    with torch.device("meta"):
        model = build_autoencoder(get_preset("imagenet256_f16d32_vf"))
    assert _count(model) == 69_836_067


@pytest.mark.parametrize("dim", [16, 32, 64])
def test_table2_tokenizers_differ_only_in_channels_and_vf(dim):
    plain, aligned = get_preset(f"imagenet256_f16d{dim}"), get_preset(f"imagenet256_f16d{dim}_vf")
    assert plain.tokenizer.model.embed_dim == aligned.tokenizer.model.embed_dim == dim
    assert not plain.tokenizer.vf.enabled and aligned.tokenizer.vf.enabled
    assert aligned.tokenizer.vf.foundation == "dinov2_vitl14"
    assert plain.tokenizer.model == aligned.tokenizer.model
    assert replace(plain.tokenizer.train, steps=0) == replace(aligned.tokenizer.train, steps=0)
    epochs = {c.name: c.tokenizer.train.steps * 256 / IMAGENET_TRAIN_IMAGES for c in (plain, aligned)}
    # Table 2 trains every tokenizer 50 epochs; the released f16d32 VA-VAE is the 125-epoch one (NOTES §3)
    assert {k: round(v) for k, v in epochs.items()} == {
        plain.name: 50, aligned.name: 125 if dim == 32 else 50}
    with torch.device("meta"):
        model = build_autoencoder(plain)
    assert model.encode(torch.empty(1, 3, 256, 256, device="meta")).mode().shape == (1, dim, 16, 16)


def test_dit_sizes_grow_b_l_xl():
    counts = [_count(_dit(f"imagenet256_lightningdit_{s}_64ep")) for s in ("b", "l", "xl")]
    assert counts == sorted(counts)
    assert 125e6 < counts[0] < 135e6 and 450e6 < counts[1] < 465e6


@pytest.mark.parametrize("size", ["b", "l", "xl"])
def test_lightningdit_schedule_matches_the_epochs(size):
    short, long = get_preset(f"imagenet256_lightningdit_{size}_64ep"), get_preset(f"imagenet256_lightningdit_{size}_800ep")
    for config, epochs in ((short, 64), (long, 800)):
        t = config.dit.train
        assert t.batch_size == 1024 and t.lr == 2e-4 and t.betas == (0.9, 0.95) and t.optimizer == "adamw"
        assert t.precision == "bf16" and config.dit.ema_decay == 0.9999
        assert abs(t.steps * t.batch_size / IMAGENET_TRAIN_IMAGES - epochs) < 0.5
        assert config.dit.model.size == f"{size.upper()}/1"
    assert short.dit.train.steps == 80_000


def test_fid_sampling_settings():
    s64 = get_preset("imagenet256_lightningdit_xl_64ep").sample
    s800 = get_preset("imagenet256_lightningdit_xl_800ep").sample
    for s in (s64, s800):
        assert (s.sampler, s.steps, s.timestep_shift, s.num_samples) == ("euler", 250, 0.3, 50_000)
        assert s.cfg_channels == 3  # the official forward_with_cfg quirk the published numbers used
    assert (s64.cfg_scale, s64.cfg_interval_start) == (10.0, 0.11)
    assert (s800.cfg_scale, s800.cfg_interval_start) == (6.7, 0.125)


def test_every_imagenet_preset_is_listed():
    names = [n for n in PRESETS if n.startswith("imagenet256_lightningdit_")]
    assert len(names) == 6
    assert all(get_preset(n).name == n for n in names)


def test_reference_config_is_the_xl_64ep_preset_and_every_field_is_annotated():
    from pathlib import Path

    from vavae_lab.config import load_config

    path = Path(__file__).resolve().parent.parent / "configs" / "reference_imagenet256.yaml"
    assert load_config(path) == get_preset("imagenet256_lightningdit_xl_64ep")
    fields = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(fields) > 100
    for line in fields:
        comment = line.split("  # ", 1)[1] if "  # " in line else ""
        assert "NOTES §" in comment or "project" in comment or "engineering" in comment, line
