"""The generation-quality proxies: rank correlation, the probe config, and the probe inside training."""
import math

import pytest
import torch

from vavae_lab.analysis.proxy import spearman
from vavae_lab.presets import probe_config
from vavae_lab.config import apply_overrides
from vavae_lab.pipeline import tokenizer_probe
from vavae_lab.presets import get_preset
from vavae_lab.train.tokenizer import train_tokenizer

from test_train_tokenizer import TINY

PROBE = ["tokenizer.probe.images=96", "tokenizer.probe.dit_steps=4", "tokenizer.probe.dit_batch=16",
         "tokenizer.probe.samples=20", "tokenizer.probe.sample_steps=2", "tokenizer.probe.uniformity_n=60",
         "metrics.num_images=64", "tokenizer.loss.disc_start=100",
         "metrics.toy.feature_dim=8"]  # the probe's 20 samples need features of fewer dimensions


def test_spearman_matches_hand_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4) vs (2,1,4,3): d^2 = 4 -> 1 - 6*4/(4*15) = 0.6
    assert spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2])


def test_probe_config_is_small_and_fixed():
    pc = probe_config(get_preset("lab"))
    assert pc.data.num_train == 2000 and pc.latents.flip is False
    assert pc.dit.model.size == "toy-XS/1" and pc.dit.train.steps == 100 and pc.sample.cfg_scale == 1.0
    assert pc.dit.train.lr == 1e-3 and pc.dit.ema_decay == 0.0  # fixed, whatever the preset's own DiT uses
    assert probe_config(get_preset("lab_long")).dit.train.steps == 200
    assert pc.tokenizer == get_preset("lab").tokenizer  # the tokenizer itself is untouched


def test_probe_logs_proxies_without_changing_training(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "cache"))
    base = apply_overrides(get_preset("smoke"), TINY + PROBE)
    plain, _ = train_tokenizer(base, tmp_path / "plain")
    config = apply_overrides(base, ["tokenizer.probe.every=4"])
    probed, history = train_tokenizer(config, tmp_path / "probed", probe=tokenizer_probe(config))
    assert [r["step"] for r in history["probe"]] == [4, 8]
    for r in history["probe"]:
        assert math.isfinite(r["probe_gfid"]) and r["probe_gfid"] > 0
        assert 0 <= r["probe_gini"] < 1 and 0 < r["probe_entropy"] <= 1 and r["probe_density"] > 0
    for k, v in plain.state_dict().items():
        assert torch.equal(v, probed.state_dict()[k]), k
