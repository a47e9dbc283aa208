"""Run-time estimates: calibrated on the measured lab/smoke runs and linear in steps, batch and model cost."""
from dataclasses import replace

import pytest

from vavae_lab.checkpoint import atomic_save
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import ConfigError
from vavae_lab.estimate import describe_estimate, estimate_minutes, format_minutes
from vavae_lab.presets import get_preset


def test_lab_long_and_smoke_reproduce_the_measurements():
    lab = get_preset("lab_long")
    assert estimate_minutes(lab, "tokenizer") == pytest.approx(8.6)
    assert estimate_minutes(lab, "dit") == pytest.approx(8.5)
    assert estimate_minutes(get_preset("smoke"), "pipeline") == pytest.approx(65 / 60)


@pytest.mark.parametrize("stage", ["tokenizer", "dit"])
def test_linear_in_steps_and_batch_and_counts_only_remaining_steps(stage):
    lab = get_preset("lab_long")
    base = estimate_minutes(lab, stage)
    steps, batch = f"{stage}.train.steps", f"{stage}.train.batch_size"
    assert estimate_minutes(apply_overrides(lab, {steps: 3000}), stage) == pytest.approx(3 * base)
    half_batch = getattr(lab, stage).train.batch_size // 2
    assert estimate_minutes(apply_overrides(lab, {batch: half_batch}), stage) == pytest.approx(base / 2)
    assert estimate_minutes(lab, stage, start_step=750) == pytest.approx(base / 4)
    assert estimate_minutes(lab, stage, start_step=5000) == 0


def test_model_cost_scales_the_estimate():
    lab = get_preset("lab_long")
    double_res = apply_overrides(lab, {"data.resolution": 64})
    assert estimate_minutes(double_res, "tokenizer") == pytest.approx(4 * estimate_minutes(lab, "tokenizer"))
    assert estimate_minutes(double_res, "dit") == pytest.approx(4 * estimate_minutes(lab, "dit"))  # 4x tokens
    wider = apply_overrides(lab, {"dit.model.size": "toy-M/1"})  # depth 6 x 128^2 vs 4 x 96^2: on the measured line
    per_image = (3.984375 + (3.984375 - 85.0 / 38.4) * (6 * 128 ** 2 - 4 * 96 ** 2) / (4 * 96 ** 2 - 2 * 64 ** 2))
    assert estimate_minutes(wider, "dit") == pytest.approx(1000 * 128 * per_image / 60000)
    assert estimate_minutes(get_preset("imagenet256_f16d32_vf"), "dit") > 365 * 1440  # not for a laptop


def test_formatting_and_errors():
    assert [format_minutes(m) for m in (0.5, 8.6, 200, 3 * 1440, 2 * 365 * 1440)] == [
        "30 s", "8.6 min", "3.3 h", "3 days", "2 years"]
    assert describe_estimate(get_preset("lab_long"), "dit", start_step=500).startswith(
        "rough estimate: ~4.2 min for steps 500..1000 on a 2-core CPU")
    with pytest.raises(ConfigError, match="tokenizer, dit, pipeline"):
        estimate_minutes(get_preset("lab_long"), "sampling")


def test_training_prints_the_estimate_only_with_progress(tmp_path, monkeypatch, capsys):
    from vavae_lab.latents import extract_latents
    from vavae_lab.build import build_autoencoder
    from vavae_lab.train.dit import train_dit

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    config = apply_overrides(get_preset("smoke"), [
        "data.num_train=32", "device=cpu", "latents.shard_size=32", "latents.stats_count=32", "dit.train.steps=2",
        "dit.train.batch_size=8", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4"])
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                tmp_path / "tok" / "tokenizer.pt")
    extract_latents(config, tmp_path / "tok", tmp_path / "lat", progress=False)
    train_dit(config, tmp_path / "lat")
    assert "rough estimate: ~" in capsys.readouterr().out
    train_dit(apply_overrides(config, {"dit.train.progress": False}), tmp_path / "lat")
    assert "rough estimate" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match="dit.train.batch_size=0"):  # a Config built in Python is checked too
        train_dit(replace(config, dit=replace(config.dit, train=replace(config.dit.train, batch_size=0))),
                  tmp_path / "lat")


def test_lab_reproduces_its_measurements_and_costs_less_per_image():
    lab, lab_long = get_preset("lab"), get_preset("lab_long")
    assert estimate_minutes(lab, "tokenizer") == pytest.approx(300.0 / 60)  # the f8 tokenizer
    assert estimate_minutes(get_preset("lab_classic"), "dit") == pytest.approx(85.0 / 60)  # the toy-XS DiT
    wide_top = apply_overrides(lab_long, {"tokenizer.model.ch_mult": [2, 2, 2]})  # only the 32 px level widens
    assert estimate_minutes(wide_top, "tokenizer") > estimate_minutes(lab_long, "tokenizer")
