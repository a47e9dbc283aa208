"""Samplers: shifted Euler / Heun / dopri5 ODE for the rectified flow, interval CFG, DDPM/DDIM for the baseline."""
from __future__ import annotations

from typing import Callable

import torch

from ..choices import ODE_SAMPLERS
from vavae_lab.diffusion.transport import DDPM, draw
from vavae_lab.errors import ConfigError

METHODS = ODE_SAMPLERS  # sample_ode's methods: the config's list of ODE samplers
NFE_PER_STEP = {"euler": 1, "heun": 2}  # model evaluations per step of the fixed-step methods (dopri5 adapts)

# velocity_fn(x, t) -> velocity shaped like x; t is a (B,) tensor (t = 0 noise, t = 1 data)
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def timestep_shift(t, s: float):
    """Warp times in [0, 1] with t' = s t / (1 + (s - 1) t): fixes 0 and 1, s < 1 spends more steps near the noise."""
    if not s > 0:
        raise ConfigError(f"the timestep shift must be > 0, got {s}; 1.0 means no shift, the paper uses 0.3.")
    # s t / (s t + 1 - t) is the same expression, written so that t = 1 maps to exactly 1.0 in floating point
    return s * t / (s * t + (1 - t))


def _shift_derivative(u: torch.Tensor, s: float) -> torch.Tensor:
    """d t' / d t of timestep_shift at u: s / (1 + (s - 1) u)^2."""
    return s / (1 + (s - 1) * u) ** 2


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The steps + 1 integration times from 0 (noise) to 1 (data) in float64, uniform then shifted.

    The official code's `num_steps` counts grid points, so its "250 steps" is 249 intervals
    (transport/integrators.py 94: linspace(t0, t1, num_steps)); here `steps` counts intervals (model
    evaluations for Euler), so the ImageNet presets set 249 (presets.OFFICIAL_SAMPLING_STEPS - 1).
    """
    if steps < 1:
        raise ConfigError(f"the number of sampling steps must be >= 1, got {steps}.")
    return timestep_shift(torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64), shift)


def _batch_t(t, x: torch.Tensor) -> torch.Tensor:
    """A (B,) time tensor on x's device and dtype from a Python number, a 0-d tensor or a (B,) tensor."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ConfigError(f"t must be a scalar or shaped ({x.shape[0]},), got {tuple(t.shape)}.")
    return t


def cfg_velocity(
    model,
    y: torch.Tensor,
    *,
    scale: float = 1.0,
    interval_start: float = 0.0,
    channels: int = 0,
    null_class: int,
) -> VelocityFn:
    """Wrap model(x, t, y) into a guided velocity f(x, t) = v_u + scale (v_c - v_u), applied while t >= interval_start.

    Guidance runs the model once on the doubled batch [x, x] with labels [y, null_class]. With
    channels = k > 0 only the first k channels are guided and the others keep the conditional
    prediction, which is what the official forward_with_cfg does with k = 3. Where no sample is
    guided (scale == 1 or every t < interval_start) it makes a single conditional forward.
    A scale below 1 is refused: the official sampler does not guide there (inference.py 125: cfg only when
    scale > 1), while the formula would move towards the unconditional model.
    The same wrapper guides an epsilon model (the DDPM baseline): the combination rule is identical.
    """
    if not scale >= 1:
        raise ConfigError(f"the CFG scale must be >= 1 (1.0 = no guidance; below 1 the official code does not "
                          f"guide), got {scale}; set sample.cfg_scale=1.0 to sample without guidance.")
    if not 0.0 <= interval_start <= 1.0:
        raise ConfigError(f"cfg interval_start must lie in [0, 1] (t = 1 is data), got {interval_start}.")
    if channels < 0:
        raise ConfigError(f"cfg channels must be >= 0 (0 guides all channels), got {channels}.")

    def velocity(x: torch.Tensor, t) -> torch.Tensor:
        t = _batch_t(t, x)
        if channels > x.shape[1]:
            raise ConfigError(
                f"cfg channels={channels} but x has only {x.shape[1]} channels; use 0 to guide all of them."
            )
        guided = t >= interval_start
        if scale == 1.0 or not bool(guided.any()):
            return model(x, t, y)
        null = torch.full_like(y, null_class)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        v_cond, v_uncond = out.chunk(2)
        k = channels or x.shape[1]
        v = v_cond.clone()
        v[:, :k] = v_uncond[:, :k] + scale * (v_cond[:, :k] - v_uncond[:, :k])
        mask = guided.reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(mask, v, v_cond)

    return velocity


def _counted(fn: VelocityFn, stats: dict | None) -> VelocityFn:
    """Wrap fn so each call adds one to stats["nfe"] (a no-op wrapper when stats is None)."""
    if stats is None:
        return fn
    stats["nfe"] = 0

    def wrapper(x, t):
        stats["nfe"] += 1
        return fn(x, t)

    return wrapper


@torch.no_grad()
def sample_ode(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    *,
    method: str = "euler",
    steps: int = 250,
    shift: float = 1.0,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    max_nfe: int | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from noise at t = 0 to t = 1 and return the samples.

    * "euler": x += (t_{i+1} - t_i) v(x, t_i) on the shifted grid; `steps` model calls.
    * "heun": Heun's 2nd-order step on every interval, the last one included (as torchdiffeq's
      heun2 that SiT uses; the EDM "last step Euler" trick is not needed because the velocity
      at t = 1 is well defined); 2 * steps model calls.
    * "dopri5": torchdiffeq's adaptive solver with atol / rtol; `steps` is unused. The shift is
      applied as a change of variables t = shift(u), dx/du = v(x, t(u)) dt/du, so it moves where
      the solver spends its steps. (The official code passes the shifted grid as output times, which
      only changes where the path is reported; both solve the same ODE.) It stops with a ConfigError
      after `max_nfe` model calls (None: no cap), as on a barely trained DiT it may never converge.
    Pass a dict as `stats` to receive the number of model evaluations in stats["nfe"].
    """
    if method not in METHODS:
        raise ConfigError(f"unknown ODE method {method!r}; choose one of {METHODS}.")
    if not shift > 0:
        raise ConfigError(f"the timestep shift must be > 0, got {shift}; 1.0 means no shift.")
    fn = _counted(velocity_fn, stats)
    batch = noise.shape[0]
    x = noise
    if method == "dopri5":
        return _sample_dopri5(fn, x, shift=shift, atol=atol, rtol=rtol, max_nfe=max_nfe)
    grid = time_grid(steps, shift).tolist()
    for t_cur, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t_cur
        d_cur = fn(x, torch.full((batch,), t_cur, device=x.device, dtype=x.dtype))
        if method == "euler":
            x = x + h * d_cur
        else:
            x_pred = x + h * d_cur
            d_next = fn(x_pred, torch.full((batch,), t_next, device=x.device, dtype=x.dtype))
            x = x + 0.5 * h * (d_cur + d_next)
    return x


def _sample_dopri5(fn: VelocityFn, x: torch.Tensor, *, shift: float, atol: float, rtol: float,
                   max_nfe: int | None = None) -> torch.Tensor:
    """Solve the flow ODE from u = 0 to 1 with torchdiffeq's dopri5 in the shifted variable u."""
    from torchdiffeq import odeint

    batch = x.shape[0]
    calls = [0]

    def rhs(u: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if max_nfe is not None and calls[0] > max_nfe:
            raise ConfigError(f"dopri5 made {max_nfe} model evaluations (sample.max_nfe={max_nfe}) and reached only "
                              f"t={float(timestep_shift(u.clamp(0.0, 1.0), shift)):.3f} of 1, as on a barely trained "
                              "DiT; raise sample.max_nfe, loosen sample.rtol/sample.atol, or use a fixed-step "
                              "sampler: sample.sampler=euler (or heun) sample.steps=50")
        u = u.clamp(0.0, 1.0)
        t = timestep_shift(u, shift)
        v = fn(state, t.expand(batch).to(state.dtype))
        return v * _shift_derivative(u, shift).to(state.dtype)

    span = torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype)
    return odeint(rhs, x, span, method="dopri5", atol=atol, rtol=rtol)[-1]


@torch.no_grad()
def sample_ddpm(
    eps_model_fn: VelocityFn,
    noise: torch.Tensor,
    *,
    num_steps: int = 1000,
    sample_steps: int = 250,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """Sample the DDPM baseline with `sample_steps` of its `num_steps` steps, evenly respaced as in DiT.

    eps_model_fn(x, t) predicts the noise, with t = 1 - k / num_steps as in DDPM.loss. Each step is
    the DDIM update; eta = 1 is exactly DDPM's ancestral step on the respaced chain (posterior
    variance), eta = 0 the deterministic DDIM sampler. The last step returns the predicted x_0.
    """
    if sample_steps < 1 or sample_steps > num_steps:
        raise ConfigError(f"sample_steps must lie in [1, num_steps={num_steps}], got {sample_steps}.")
    if not eta >= 0:
        raise ConfigError(f"eta must be >= 0 (1 = ancestral DDPM, 0 = DDIM), got {eta}.")
    ddpm = DDPM(num_steps=num_steps)
    fn = _counted(eps_model_fn, stats)
    keep = torch.linspace(num_steps - 1, 0, sample_steps, dtype=torch.float64).round().long().tolist()
    keep = sorted(set(keep), reverse=True)
    abar_all = ddpm.alphas_cumprod.tolist()
    x = noise
    batch = noise.shape[0]
    for i, k in enumerate(keep):
        abar = abar_all[k]
        abar_prev = abar_all[keep[i + 1]] if i + 1 < len(keep) else 1.0
        t = ddpm.model_time(torch.tensor(k)).item()
        eps = fn(x, torch.full((batch,), t, device=x.device, dtype=x.dtype))
        x0 = (x - (1 - abar) ** 0.5 * eps) / abar ** 0.5
        var = eta ** 2 * (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
        x = abar_prev ** 0.5 * x0 + max(1 - abar_prev - var, 0.0) ** 0.5 * eps
        if var > 0:
            z = draw("normal", x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + var ** 0.5 * z
    return x
