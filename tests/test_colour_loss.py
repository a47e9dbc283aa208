"""The colour-balanced pixel loss (tokenizer.loss.colour_balance): its matrix, the loss, the config and the key."""
from __future__ import annotations

import pytest
import torch

from vavae_lab.config import load_config
from vavae_lab.errors import ConfigError
from vavae_lab.keys import stage_key
from vavae_lab.build import build_loss, colour_matrix
from vavae_lab.tokenizer.colour import apply_colour_matrix, colour_balance_matrix
from vavae_lab.tokenizer.losses import TokenizerLoss


def _tinted_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Images whose pixel colours vary 8x more along lightness (1, 1, 1) than across it."""
    g = torch.Generator().manual_seed(seed)
    light = torch.randn(n, 1, 8, 8, generator=g) * 0.8
    chroma = torch.randn(n, 3, 8, 8, generator=g) * 0.1
    chroma = chroma - chroma.mean(1, keepdim=True)  # no lightness in the chroma part
    return light.expand(-1, 3, -1, -1) + chroma


def test_strength_zero_is_the_plain_l1():
    assert torch.allclose(colour_balance_matrix(_tinted_images(), 0.0), torch.eye(3), atol=1e-5)


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_each_principal_component_is_weighted_by_its_relative_spread(strength):
    images = _tinted_images()
    m = colour_balance_matrix(images, strength).double()
    pixels = images.double().permute(1, 0, 2, 3).reshape(3, -1)
    var, vec = torch.linalg.eigh(torch.cov(pixels))
    s = var.sqrt()
    for k in range(3):  # M u_k = (s_max / s_k) ** strength u_k
        assert torch.allclose(m @ vec[:, k], (s.max() / s[k]) ** strength * vec[:, k], atol=1e-4)
    assert torch.allclose(m, m.T, atol=1e-6)
    # lightness keeps weight 1; chroma, ~8x narrower here, is weighted up
    light = torch.ones(3, dtype=torch.float64) / 3 ** 0.5
    assert abs(float(light @ m @ light) - 1.0) < 0.05
    if strength == 1.0:  # full balance: every component of the weighted pixels spreads like lightness
        spread = torch.linalg.eigvalsh(torch.cov(m @ pixels)).sqrt()
        assert float(spread.max() / spread.min()) < 1.01


def test_the_loss_measures_the_weighted_residual():
    x, y = torch.rand(2, 3, 4, 4) * 2 - 1, torch.rand(2, 3, 4, 4) * 2 - 1
    plain = TokenizerLoss(perceptual_weight=0.0, disc_start=10**6).eval()
    same = TokenizerLoss(perceptual_weight=0.0, disc_start=10**6, colour_matrix=torch.eye(3)).eval()
    m = colour_balance_matrix(_tinted_images(), 1.0)
    weighted = TokenizerLoss(perceptual_weight=0.0, disc_start=10**6, colour_matrix=m).eval()
    post = type("P", (), {"kl": lambda self: torch.zeros(2)})()
    _, a = plain.generator_loss(x, y, post, 0)
    _, b = same.generator_loss(x, y, post, 0)
    _, c = weighted.generator_loss(x, y, post, 0)
    assert a["nll"] == pytest.approx(b["nll"], rel=1e-6)
    expected = apply_colour_matrix(m, x - y).abs().sum() / 2
    assert c["nll"] == pytest.approx(float(expected), rel=1e-5)
    assert "colour_matrix" not in weighted.state_dict()  # rebuilt from the config, never in checkpoints


def test_bad_matrix_and_bad_override_get_one_line():
    with pytest.raises(ConfigError, match="3 x 3"):
        TokenizerLoss(perceptual_weight=0.0, colour_matrix=torch.eye(4))
    with pytest.raises(ConfigError, match="tokenizer.loss.colour_balance"):
        load_config("smoke", ["tokenizer.loss.colour_balance=-1"])
    with pytest.raises(ConfigError, match="B x 3 x H x W"):
        colour_balance_matrix(torch.zeros(2, 1, 4, 4), 1.0)


def test_config_builds_the_matrix_from_its_training_images():
    config = load_config("smoke", ["tokenizer.loss.colour_balance=1", "tokenizer.vf.enabled=false"])
    m = colour_matrix(config)
    assert m.shape == (3, 3) and torch.allclose(m, colour_matrix(config))  # deterministic
    loss = build_loss(config, None)
    assert torch.equal(loss.colour_matrix, m)
    assert build_loss(load_config("smoke", ["tokenizer.vf.enabled=false"]), None).colour_matrix is None


def test_the_default_leaves_every_older_key_valid():
    base = load_config("smoke", [])
    zero = load_config("smoke", ["tokenizer.loss.colour_balance=0"])
    half = load_config("smoke", ["tokenizer.loss.colour_balance=0.5"])
    assert stage_key(zero, "tokenizer") == stage_key(base, "tokenizer")
    assert stage_key(half, "tokenizer") != stage_key(base, "tokenizer")
    assert stage_key(half, "dit") != stage_key(base, "dit")  # and it reaches every later stage
