"""Samplers against a known answer (Gaussian data, exact velocity), timestep shift, classifier-free guidance, errors."""
import pytest
import torch

from vavae_lab.diffusion.samplers import (
    cfg_velocity,
    sample_ddpm,
    sample_ode,
    time_grid,
    timestep_shift,
)
from vavae_lab.diffusion.transport import DDPM
from vavae_lab.errors import ConfigError

D = torch.float64
MU = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=D)
_A = torch.tensor([[1.0, 0.3, 0.0, 0.2], [0.0, 0.8, -0.4, 0.0], [0.5, 0.0, 0.6, 0.1], [0.0, 0.2, 0.0, 0.3]], dtype=D)
SIGMA = _A @ _A.T + 0.05 * torch.eye(4, dtype=D)  # eigenvalues spread over ~0.1 .. 1.6
EYE = torch.eye(4, dtype=D)


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x1 - x0 | x_t = x] for x1 ~ N(MU, SIGMA), x0 ~ N(0, I).

    x_t ~ N(t MU, t^2 S + (1-t)^2 I) and Cov(x1 - x0, x_t) = t S - (1-t) I, so the conditional mean is
    MU + (t S - (1-t) I)(t^2 S + (1-t)^2 I)^-1 (x - t MU).
    """
    s = float(t[0])
    assert torch.all(t == t[0])
    gain = (s * SIGMA - (1 - s) * EYE) @ torch.linalg.inv(s * s * SIGMA + (1 - s) ** 2 * EYE)
    return MU + (x - s * MU) @ gain.T


def whitened_noise(n: int, seed: int = 0) -> torch.Tensor:
    """n standard-normal draws shifted and rotated so their sample mean is exactly 0 and covariance exactly I.

    Every sampler is an affine map for this linear velocity field, so with whitened inputs the mean and
    covariance of the outputs carry only the solver's error, not Monte-Carlo noise.
    """
    z = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=D)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(torch.cov(z.T))
    return torch.linalg.solve_triangular(chol, z.T, upper=False).T


def moment_errors(x: torch.Tensor) -> tuple[float, float]:
    """Largest absolute error of the sample mean against MU and of the sample covariance against SIGMA."""
    return (x.mean(0) - MU).abs().max().item(), (torch.cov(x.T) - SIGMA).abs().max().item()


@pytest.mark.parametrize("method, steps, shift, tol", [
    ("euler", 100, 1.0, 0.06),
    ("euler", 120, 0.3, 0.06),
    ("heun", 25, 1.0, 0.01),
    ("heun", 25, 0.3, 0.01),
    ("dopri5", 1, 1.0, 0.01),
    ("dopri5", 1, 0.3, 0.01),
])
def test_ode_samplers_turn_noise_into_the_data_gaussian(method, steps, shift, tol):
    stats = {}
    x = sample_ode(exact_velocity, whitened_noise(20000), method=method, steps=steps, shift=shift, stats=stats)
    mean_err, cov_err = moment_errors(x)
    assert mean_err < tol and cov_err < tol, (mean_err, cov_err)
    assert stats["nfe"] == {"euler": steps, "heun": 2 * steps}.get(method, stats["nfe"]) and stats["nfe"] > 1


def test_euler_is_first_order_and_heun_second_order():
    noise = whitened_noise(512)
    errors = {(m, n): moment_errors(sample_ode(exact_velocity, noise, method=m, steps=n))[1]
              for m in ("euler", "heun") for n in (20, 40)}
    assert errors[("euler", 40)] / errors[("euler", 20)] == pytest.approx(0.5, abs=0.1)
    assert errors[("heun", 40)] / errors[("heun", 20)] == pytest.approx(0.25, abs=0.1)


def test_few_euler_steps_are_measurably_wrong():
    """The known-answer check has teeth: 4 Euler steps miss the covariance by far more than 100 do."""
    assert moment_errors(sample_ode(exact_velocity, whitened_noise(512), steps=4))[1] > 0.3


def test_timestep_shift_fixes_the_endpoints_and_is_monotone():
    t = torch.linspace(0, 1, 101, dtype=D)
    assert torch.equal(timestep_shift(t, 1.0), t)
    for s in (0.3, 3.0):
        shifted = timestep_shift(t, s)
        assert shifted[0] == 0 and shifted[-1] == 1
        assert (shifted.diff() > 0).all()
    assert timestep_shift(0.5, 0.3) == pytest.approx(0.15 / 0.65)
    assert (timestep_shift(t[1:-1], 0.3) < t[1:-1]).all()  # s < 1 spends more steps near the noise
    grid = time_grid(10, 0.3)
    assert grid.shape == (11,) and grid[0] == 0 and grid[-1] == 1
    assert torch.allclose(grid, timestep_shift(torch.linspace(0, 1, 11, dtype=D), 0.3))


def test_deterministic_ddim_matches_the_data_gaussian():
    ddpm = DDPM()

    def exact_eps(x, t):
        a = ddpm.alphas_cumprod[ddpm.step_from_time(t[:1])].item()
        return (1 - a) ** 0.5 * (x - a ** 0.5 * MU) @ torch.linalg.inv(a * SIGMA + (1 - a) * EYE).T

    stats = {}
    x = sample_ddpm(exact_eps, whitened_noise(4096), sample_steps=100, eta=0.0, stats=stats)
    assert stats["nfe"] == 100
    mean_err, cov_err = moment_errors(x)
    # mean: the chain starts from N(0, I) instead of N(sqrt(abar_999) MU, ...), an error of ~0.011;
    # covariance: DDIM is first order, 0.08 / 0.04 / 0.02 at 50 / 100 / 200 steps
    assert mean_err < 0.02 and cov_err < 0.06, (mean_err, cov_err)
    gen = torch.Generator().manual_seed(0)
    x = sample_ddpm(exact_eps, whitened_noise(8192), sample_steps=100, eta=1.0, generator=gen)
    rel_cov = torch.linalg.norm(torch.cov(x.T) - SIGMA) / torch.linalg.norm(SIGMA)
    assert (x.mean(0) - MU).abs().max() < 0.05 and rel_cov < 0.15


class FakeModel:
    """model(x, t, y) = (1 + t) x + y + channel index, recording the batch it saw."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], y.clone()))
        shape = (-1,) + (1,) * (x.dim() - 1)
        channel = torch.arange(x.shape[1], dtype=x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
        return (1 + t.reshape(shape)) * x + y.reshape(shape).to(x.dtype) + channel


def _by_hand(x, t, y, null, scale):
    model = FakeModel()
    v_c, v_u = model(x, t, y), model(x, t, torch.full_like(y, null))
    return v_c, v_u + scale * (v_c - v_u)


def test_cfg_scale_one_is_one_conditional_forward():
    model, x, y = FakeModel(), torch.randn(3, 4, 2, 2), torch.tensor([1, 2, 3])
    v = cfg_velocity(model, y, scale=1.0, null_class=10)(x, 0.5)
    assert torch.equal(v, FakeModel()(x, torch.full((3,), 0.5), y))
    assert len(model.calls) == 1 and model.calls[0][0] == 3


def test_cfg_guides_with_the_null_class_in_one_doubled_batch():
    model, x, y = FakeModel(), torch.randn(3, 4, 2, 2), torch.tensor([1, 2, 3])
    v = cfg_velocity(model, y, scale=4.0, null_class=10)(x, torch.full((3,), 0.5))
    v_c, guided = _by_hand(x, torch.full((3,), 0.5), y, 10, 4.0)
    assert torch.allclose(v, guided) and not torch.allclose(v, v_c)
    (batch, labels), = model.calls
    assert batch == 6 and labels.tolist() == [1, 2, 3, 10, 10, 10]


def test_cfg_interval_masks_guidance_by_t():
    x, y = torch.randn(3, 4, 2, 2), torch.tensor([1, 2, 3])
    model = FakeModel()
    fn = cfg_velocity(model, y, scale=4.0, interval_start=0.5, null_class=10)
    early = fn(x, 0.3)
    assert torch.equal(early, FakeModel()(x, torch.full((3,), 0.3), y)) and model.calls[-1][0] == 3
    assert torch.allclose(fn(x, 0.7), _by_hand(x, torch.full((3,), 0.7), y, 10, 4.0)[1])
    t = torch.tensor([0.2, 0.5, 0.9])
    v_c, guided = _by_hand(x, t, y, 10, 4.0)
    mixed = fn(x, t)
    assert torch.allclose(mixed[0], v_c[0]) and torch.allclose(mixed[1:], guided[1:])


def test_cfg_channels_guides_only_the_first_k_and_keeps_the_conditional_rest():
    x, y, t = torch.randn(2, 4, 3), torch.tensor([0, 5]), torch.full((2,), 0.8)
    v = cfg_velocity(FakeModel(), y, scale=3.0, channels=3, null_class=7)(x, t)
    v_c, guided = _by_hand(x, t, y, 7, 3.0)
    assert torch.allclose(v[:, :3], guided[:, :3])
    assert torch.allclose(v[:, 3:], v_c[:, 3:]) and not torch.allclose(v[:, 3:], guided[:, 3:])


def test_sampler_errors_name_the_setting():
    y = torch.tensor([0])
    with pytest.raises(ConfigError, match="steps"):
        sample_ode(exact_velocity, whitened_noise(8), steps=0)
    with pytest.raises(ConfigError, match="method"):
        sample_ode(exact_velocity, whitened_noise(8), method="rk4")
    with pytest.raises(ConfigError, match="shift"):
        sample_ode(exact_velocity, whitened_noise(8), shift=0.0)
    with pytest.raises(ConfigError, match="shift"):
        timestep_shift(0.5, -1.0)
    with pytest.raises(ConfigError, match="scale"):
        cfg_velocity(FakeModel(), y, scale=-1.0, null_class=1)
    with pytest.raises(ConfigError, match="interval_start"):
        cfg_velocity(FakeModel(), y, interval_start=1.5, null_class=1)
    with pytest.raises(ConfigError, match="channels"):
        cfg_velocity(FakeModel(), y, channels=-1, null_class=1)
    with pytest.raises(ConfigError, match="only 4 channels"):
        cfg_velocity(FakeModel(), y, scale=2.0, channels=5, null_class=1)(torch.randn(1, 4, 2, 2), 0.5)
    with pytest.raises(ConfigError, match="sample_steps"):
        sample_ddpm(lambda x, t: x, torch.randn(2, 4), sample_steps=0)


def test_one_list_of_samplers_config_and_sample_ode_agree():
    from vavae_lab.choices import ODE_SAMPLERS, SAMPLERS
    from vavae_lab.config import Config, apply_overrides
    from vavae_lab.diffusion.samplers import METHODS

    assert METHODS == ODE_SAMPLERS and SAMPLERS == (*ODE_SAMPLERS, "ddpm")
    for name in SAMPLERS:
        assert apply_overrides(Config(), [f"sample.sampler={name}"]).sample.sampler == name
    with pytest.raises(ConfigError, match="one of euler, heun, dopri5, ddpm"):
        apply_overrides(Config(), ["sample.sampler=rk4"])
    with pytest.raises(ConfigError, match="unknown ODE method"):
        sample_ode(lambda x, t: x, torch.zeros(1, 2), method="ddpm")


def test_cfg_below_one_is_refused_as_the_official_code_does_not_guide_there():
    """The official sampler guides only when cfg_scale > 1 (inference.py 125); below 1 the formula would blend
    towards the unconditional model, so both the sampler and the config refuse it in one line."""
    from vavae_lab.config import load_config

    for scale in (0.0, 0.5, 0.99):
        with pytest.raises(ConfigError, match="must be >= 1"):
            cfg_velocity(FakeModel(), torch.tensor([0]), scale=scale, null_class=1)
    with pytest.raises(ConfigError, match=r"sample.cfg_scale=0.5 .*>= 1.*inference.py 125") as err:
        load_config("lab", ["sample.cfg_scale=0.5"])
    assert "\n" not in str(err.value)
    assert load_config("lab", ["sample.cfg_scale=1.0"]).sample.cfg_scale == 1.0


def test_official_num_sampling_steps_250_is_249_euler_calls():
    """The official num_sampling_steps counts grid points (transport/integrators.py 94: linspace(t0, t1, n))."""
    from vavae_lab.presets import OFFICIAL_SAMPLING_STEPS, get_preset

    steps = get_preset("imagenet256_lightningdit_xl_64ep").sample.steps
    assert steps == OFFICIAL_SAMPLING_STEPS - 1 == 249
    grid = time_grid(steps, 0.3)
    assert len(grid) == OFFICIAL_SAMPLING_STEPS  # the official grid: 250 points from noise to data
    official = torch.linspace(0.0, 1.0, OFFICIAL_SAMPLING_STEPS, dtype=torch.float64)
    assert torch.allclose(grid, 0.3 * official / (1 + (0.3 - 1) * official))
    stats = {}
    sample_ode(exact_velocity, whitened_noise(8), steps=steps, shift=0.3, stats=stats)
    assert stats["nfe"] == 249
