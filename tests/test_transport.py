"""Rectified-flow and DDPM training objectives: loss formulas, t sampling, the DDPM forward process, t-bin logs."""
import math
from dataclasses import asdict

import pytest
import torch
from torch import nn

from vavae_lab.config import TransportConfig
from vavae_lab.diffusion.transport import (
    DDPM,
    RectifiedFlow,
    build_transport,
    linear_betas,
    loss_by_t_bins,
    sample_t,
)
from vavae_lab.errors import ConfigError, DataError


class RecordingModel:
    """A fixed, input-dependent fake model that remembers what it was called with."""

    def __init__(self, channels: int):
        gen = torch.Generator().manual_seed(1)
        self.weight = torch.randn(1, channels, 1, 1, generator=gen)
        self.bias = torch.randn(1, channels, 3, 3, generator=gen)
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.clone(), t.clone(), y))
        return self.weight * x + t.reshape(-1, 1, 1, 1) * self.bias


def test_rectified_flow_loss_matches_a_hand_computation():
    x_data = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    model = RecordingModel(4)
    flow = RectifiedFlow(cos_weight=0.5)
    out = flow.loss(model, x_data, torch.zeros(5, dtype=torch.long), generator=torch.Generator().manual_seed(2))
    (x_t, t, _), = model.calls
    assert torch.equal(out["t"], t)
    noise = (x_t - t.reshape(-1, 1, 1, 1) * x_data) / (1 - t.reshape(-1, 1, 1, 1))
    v_pred = model.weight * x_t + t.reshape(-1, 1, 1, 1) * model.bias
    target = x_data - noise
    per_sample, mses, coss = [], [], []
    for b in range(5):
        mse = ((v_pred[b] - target[b]) ** 2).mean().item()
        cos_terms = []
        for i in range(3):
            for j in range(3):
                a, c = v_pred[b, :, i, j], target[b, :, i, j]
                cos_terms.append(1 - (a @ c).item() / (a.norm().item() * c.norm().item()))
        cos = sum(cos_terms) / len(cos_terms)
        mses.append(mse)
        coss.append(cos)
        per_sample.append(mse + 0.5 * cos)
    assert out["per_sample"].tolist() == pytest.approx(per_sample, rel=1e-4, abs=1e-5)
    assert out["loss"].item() == pytest.approx(sum(per_sample) / 5, rel=1e-4)
    assert out["mse"].item() == pytest.approx(sum(mses) / 5, rel=1e-4)
    assert out["cos"].item() == pytest.approx(sum(coss) / 5, rel=1e-4)
    # the cosine is per position over channels, not over the flattened sample
    flat = 1 - torch.nn.functional.cosine_similarity(v_pred.flatten(1), target.flatten(1), dim=1).mean()
    assert abs(flat.item() - out["cos"].item()) > 1e-3


def test_cos_weight_zero_leaves_pure_mse_and_the_loss_backpropagates():
    net = nn.Conv2d(3, 3, 1)
    model = lambda x, t, y: net(x)  # noqa: E731
    out = RectifiedFlow(cos_weight=0.0).loss(model, torch.randn(4, 3, 2, 2), None)
    assert out["loss"].item() == pytest.approx(out["mse"].item(), rel=1e-6)
    assert out["cos"].item() > 0
    out["loss"].backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_interpolation_endpoints_and_velocity_is_the_time_derivative():
    x_data, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    assert torch.equal(RectifiedFlow.interpolate(x_data, noise, torch.zeros(3)), noise)
    assert torch.equal(RectifiedFlow.interpolate(x_data, noise, torch.ones(3)), x_data)
    t, h = torch.full((3,), 0.3, dtype=torch.float64), 1e-6
    x64, n64 = x_data.double(), noise.double()
    slope = (RectifiedFlow.interpolate(x64, n64, t + h) - RectifiedFlow.interpolate(x64, n64, t)) / h
    assert torch.allclose(slope, RectifiedFlow.velocity_target(x64, n64), atol=1e-6)


def test_logit_normal_times_lie_in_the_open_interval_with_median_one_half():
    t = sample_t(20000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and (t > 0).all() and (t < 1).all()
    assert t.median().item() == pytest.approx(0.5, abs=0.02)
    logits = torch.log(t / (1 - t))
    assert logits.mean().item() == pytest.approx(0.0, abs=0.03)
    assert logits.std().item() == pytest.approx(1.0, abs=0.03)
    shifted = sample_t(20000, mean=1.0, std=0.5, generator=torch.Generator().manual_seed(0))
    assert shifted.median().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.02)
    uniform = sample_t(20000, kind="uniform", generator=torch.Generator().manual_seed(0))
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    assert (uniform < 0.1).float().mean().item() == pytest.approx(0.1, abs=0.01)


def test_ddpm_schedule_and_forward_process_variance():
    ddpm = DDPM()
    assert ddpm.betas[0].item() == pytest.approx(1e-4) and ddpm.betas[-1].item() == pytest.approx(0.02)
    abar = ddpm.alphas_cumprod
    assert abar[10].item() == pytest.approx(math.prod(1 - b for b in ddpm.betas[:11].tolist()), rel=1e-12)
    assert abar[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # the well-known end of DDPM's schedule
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([2.0, -1.0, 0.5]).repeat(40000, 1)
    for k in (0, 250, 999):
        step = torch.full((40000,), k)
        x_k = ddpm.q_sample(x0, torch.randn(x0.shape, generator=gen), step)
        a = abar[k].item()
        assert torch.allclose(x_k.mean(0), math.sqrt(a) * x0[0], atol=0.02)
        assert torch.allclose(x_k.var(0), torch.full((3,), 1 - a), rtol=0.03, atol=1e-4)
    assert torch.allclose(linear_betas(100), torch.linspace(1e-3, 0.2, 100, dtype=torch.float64))


def test_ddpm_loss_is_zero_for_the_oracle_and_feeds_t_equal_one_minus_step_over_n():
    ddpm = DDPM()
    x = torch.randn(64, 2, 3, 3, dtype=torch.float64)

    def oracle(x_k, t, y):
        a = ddpm.alphas_cumprod[ddpm.step_from_time(t)].reshape(-1, 1, 1, 1)
        return (x_k - a.sqrt() * x) / (1 - a).sqrt()

    out = ddpm.loss(oracle, x, None, generator=torch.Generator().manual_seed(0))
    assert out["loss"].item() < 1e-12
    assert out["t"].shape == (64,) and (out["t"] > 0).all() and (out["t"] <= 1).all()
    steps = (1 - out["t"]) * 1000
    assert torch.allclose(steps, steps.round(), atol=1e-9)
    zero = ddpm.loss(lambda x_k, t, y: torch.zeros_like(x_k), x.float(), None)
    assert zero["loss"].item() == pytest.approx(1.0, abs=0.15)
    assert set(zero) == {"loss", "per_sample", "t", "mse", "cos"}


def test_loss_by_t_bins_averages_per_bin_and_drops_empty_bins():
    t = torch.tensor([0.05, 0.07, 0.55, 1.0, 0.99])
    per_sample = torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0])
    out = loss_by_t_bins(t, per_sample)
    assert out == {"t0.0-0.1": 2.0, "t0.5-0.6": 5.0, "t0.9-1.0": 8.0}
    assert list(loss_by_t_bins(t, per_sample, bins=4)) == ["t0.00-0.25", "t0.50-0.75", "t0.75-1.00"]
    with pytest.raises(ConfigError, match="per_sample"):
        loss_by_t_bins(t, per_sample[:3])


def test_build_transport_from_the_config_and_errors():
    flow = build_transport(**asdict(TransportConfig()))
    assert isinstance(flow, RectifiedFlow) and flow.t_sampling == "logit_normal" and flow.cos_weight == 1.0
    assert build_transport("rectified_flow", t_sampling="uniform", cos_weight=0.0).cos_weight == 0.0
    ddpm = build_transport("ddpm", ddpm_steps=500)
    assert isinstance(ddpm, DDPM) and ddpm.num_steps == 500
    assert build_transport("ddpm", num_steps=250).num_steps == 250
    with pytest.raises(ConfigError, match="disagree"):
        build_transport("ddpm", ddpm_steps=1000, num_steps=250)
    with pytest.raises(ConfigError, match="DDPM setting"):
        build_transport("rectified_flow", num_steps=250)
    with pytest.raises(ConfigError, match="ddpm"):
        build_transport("edm")
    with pytest.raises(ConfigError, match="t_sampling"):
        build_transport("rectified_flow", t_sampling="cosine")
    with pytest.raises(ConfigError, match="known"):
        build_transport("rectified_flow", logit_sigma=1.0)
    with pytest.raises(ConfigError, match="t_sampling"):
        sample_t(4, kind="beta")
    with pytest.raises(ConfigError, match="cos_weight"):
        RectifiedFlow(cos_weight=-1.0)


def test_wrong_model_output_shape_and_empty_batch_are_explained():
    flow = RectifiedFlow()
    with pytest.raises(ConfigError, match="shaped like its input"):
        flow.loss(lambda x, t, y: x[:, :1], torch.randn(2, 3, 2, 2), None)
    with pytest.raises(ConfigError, match="learned-sigma"):
        DDPM().loss(lambda x, t, y: torch.cat([x, x], 1), torch.randn(2, 3, 2, 2), None)
    with pytest.raises(DataError, match="batch"):
        flow.loss(lambda x, t, y: x, torch.randn(0, 3), None)
