"""The ImageNet presets build models of the paper's sizes (on the meta device, so no memory is used) and carry the
official hustvl/LightningDiT recipe field by field (each assertion names the official file it follows)."""
from dataclasses import replace

import pytest
import torch

from vavae_lab.presets import IMAGENET_TRAIN_IMAGES, PRESETS, get_preset
from vavae_lab.build import build_autoencoder
from vavae_lab.build import build_dit_for

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
    # Table 2 trains every tokenizer 50 epochs; imagenet256_f16d32_vf is the last 15-epoch stage of the released
    # VA-VAE's chain (test_the_released_vavae_is_a_three_stage_chain)
    assert {k: round(v) for k, v in epochs.items()} == {
        plain.name: 50, aligned.name: 15 if dim == 32 else 50}
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
        # num_sampling_steps 250 = 250 grid points = 249 Euler steps (transport/integrators.py 94)
        assert (s.sampler, s.steps, s.timestep_shift, s.num_samples) == ("euler", 249, 0.3, 50_000)
        assert s.cfg_channels == 3  # the official forward_with_cfg quirk the published numbers used
    # configs/reproductions/..._64ep_cfg.yaml says 0.10 (the main config 0.11); ..._800ep_cfg.yaml 0.125
    assert (s64.cfg_scale, s64.cfg_interval_start) == (10.0, 0.10)
    assert (s800.cfg_scale, s800.cfg_interval_start) == (6.7, 0.125)


def test_every_imagenet_preset_is_listed():
    names = [n for n in PRESETS if n.startswith("imagenet256_lightningdit_") and not n.endswith("_repa")]
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
        assert ("docs/paper.md §" in comment or "official " in comment or "project" in comment
                or "engineering" in comment), line


IMAGENET = [n for n in PRESETS if n.startswith("imagenet256_")]


@pytest.mark.parametrize("name", IMAGENET)
def test_every_imagenet_preset_follows_the_official_recipe(name):
    c = get_preset(name)
    # tokenizer data: short side to 256, random 256 crop, no flip (vavae/ldm/data/imagenet.py 160, taming ImagePaths)
    assert (c.data.crop, c.data.hflip, c.data.resolution) == ("random", False, 256)
    # DINOv2 input: the [-1, 1] images, bilinear to 224, no mean/std (vavae/ldm/models/foundation_models.py 52-57)
    assert c.tokenizer.vf.preprocess == "official"
    # latents: a posterior sample (tokenizer/vavae.py 70, used by extract_features.py)
    assert c.latents.sample_posterior is True and c.latents.flip is True
    # no DiT gradient clipping: train.py 209-211 clips only with optimizer.max_grad_norm, which no config sets
    assert c.dit.train.grad_clip == 0.0
    s = c.sample
    assert (s.sampler, s.steps, s.timestep_shift, s.cfg_channels) == ("euler", 249, 0.3, 3)
    assert (s.cfg_scale, s.cfg_interval_start) == ((6.7, 0.125) if "800ep" in name else (10.0, 0.10))


def test_the_released_vavae_is_a_three_stage_chain():
    """vavae/configs/f16d32_vfdinov2_long.yaml: 100 + 15 + 15 epochs, each stage from the weights before it."""
    from vavae_lab.config import load_config
    from vavae_lab.keys import stage_fields, stage_key
    from vavae_lab.presets import STAGE_FIELDS, VAVAE_STAGES, previous_stage

    chain = ["imagenet256_f16d32_vf_stage1", "imagenet256_f16d32_vf_stage2", "imagenet256_f16d32_vf"]
    assert list(VAVAE_STAGES) == chain
    got = []
    for name in chain:
        t = get_preset(name).tokenizer
        epochs = t.train.steps * t.train.batch_size / IMAGENET_TRAIN_IMAGES
        got.append((round(epochs), t.vf.weight, (t.vf.m1, t.vf.m2), t.loss.disc_start, t.init_from))
    assert got == [(100, 0.5, (0.0, 0.0), 5001, None),
                   (15, 0.1, (0.0, 0.0), 1, "imagenet256_f16d32_vf_stage1"),
                   (15, 0.1, (0.5, 0.25), 1, "imagenet256_f16d32_vf_stage2")]
    # the stages differ only in STAGE_FIELDS, and previous_stage rebuilds the stage before exactly
    last = get_preset("imagenet256_f16d32_vf")
    assert previous_stage(last) == get_preset("imagenet256_f16d32_vf_stage2")
    assert previous_stage(previous_stage(last)) == get_preset("imagenet256_f16d32_vf_stage1")
    assert "tokenizer.init_from" in STAGE_FIELDS
    # a run's own overrides (data, local weights) reach the stages before it, so the chain finds them
    ours = load_config("imagenet256_f16d32_vf", ["data.root=/data/in", "tokenizer.vf.pretrained_path=/w/d.pt"])
    theirs = load_config("imagenet256_f16d32_vf_stage2", ["data.root=/data/in", "tokenizer.vf.pretrained_path=/w/d.pt"])
    assert stage_key(previous_stage(ours), "tokenizer") == stage_key(theirs, "tokenizer")
    # a stage's key holds the key of the stage it starts from, so retraining stage 1 reaches stage 3 and the DiTs
    assert stage_fields(ours, "tokenizer")["init_from"] == {
        "preset": "imagenet256_f16d32_vf_stage2", "tokenizer": stage_key(theirs, "tokenizer")}
    xl = get_preset("imagenet256_lightningdit_xl_64ep")
    assert xl.tokenizer == last.tokenizer and stage_key(xl, "tokenizer") == stage_key(last, "tokenizer")


def test_the_chain_trains_from_the_previous_stages_folder(tmp_path, monkeypatch):
    from vavae_lab.errors import CheckpointError, ConfigError
    from vavae_lab.keys import stage_dir
    from vavae_lab.pipeline import init_source
    from vavae_lab.presets import previous_stage
    from vavae_lab.train.tokenizer import _initialise

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path))
    last = get_preset("imagenet256_f16d32_vf")
    assert init_source(last) == stage_dir(get_preset("imagenet256_f16d32_vf_stage2"), "tokenizer")
    assert init_source(previous_stage(last)) == stage_dir(get_preset("imagenet256_f16d32_vf_stage1"), "tokenizer")
    assert init_source(last, tmp_path / "root") == stage_dir(get_preset("imagenet256_f16d32_vf_stage2"), "tokenizer",
                                                             tmp_path / "root")
    with pytest.raises(CheckpointError, match="holds no finished tokenizer run.*train-tokenizer --preset "
                                              "imagenet256_f16d32_vf_stage2"):
        _initialise(last, None, None, "cpu", init_source(last))
    with pytest.raises(ConfigError, match="init_source"):  # a preset name needs the folder from the pipeline
        _initialise(last, None, None, "cpu", None)
    last.tokenizer.init_from = "runs/stage2"
    assert str(init_source(last)) == "runs/stage2"
    with pytest.raises(CheckpointError, match="runs/stage2 holds no finished tokenizer run"):
        _initialise(last, None, None, "cpu", None)


def test_preset_sampling_takes_249_model_calls_per_branch():
    """Euler on the official 250 grid points: 249 calls, each with the conditional branch; the unconditional
    (null class 1000) joins wherever t >= 0.10 and only the first 3 channels are guided."""
    from vavae_lab.diffusion.samplers import time_grid
    from vavae_lab.generate import sample_latents

    class StandIn(torch.nn.Module):
        """LightningDiT-XL/1's interface (x, t, y) -> velocity, recording each call's labels and times."""

        num_classes = 1000

        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, x, t, y):
            self.calls.append((y.clone(), t.clone()))
            return x * 0.01 + y.view(-1, 1, 1, 1).float() * 1e-4

    config = get_preset("imagenet256_lightningdit_xl_64ep")
    model, labels = StandIn(), torch.tensor([3, 7])
    z = sample_latents(model, labels, LATENT, config.sample, noise=torch.randn(2, *LATENT))
    assert z.shape == (2, *LATENT) and torch.isfinite(z).all()
    assert len(model.calls) == 249
    conditional = sum(int((y[:2] == labels).all()) for y, _ in model.calls)
    unconditional = sum(int((y == 1000).sum()) // 2 for y, _ in model.calls)
    grid = time_grid(249, 0.3)[:-1]
    assert conditional == 249
    assert unconditional == int((grid >= 0.10).sum()) > 0  # the official code runs it at all 249 and discards it
    assert [float(t[0]) for _, t in model.calls] == pytest.approx(grid.tolist())
