"""Training objectives: LightningDiT's rectified flow (velocity + cosine loss) and the DDPM epsilon baseline of DiT."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..choices import PATHS, T_SAMPLINGS
from ..errors import ConfigError, DataError

# Time convention used everywhere in vavae_lab.diffusion: t in [0, 1], t = 0 is pure noise, t = 1 is data.


def _expand_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to (B, 1, ..., 1) so it broadcasts against x."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


def _check_data(x: torch.Tensor) -> None:
    """Raise DataError when x is not a batch of at least one (B, C, ...) sample."""
    if x.dim() < 2 or x.shape[0] == 0:
        raise DataError(
            f"expected a batch shaped (B, C, ...) with B >= 1, got shape {tuple(x.shape)}; "
            "add a batch dimension (x[None]) or check the data loader."
        )


def draw(kind: str, shape, *, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """A standard-normal or U(0, 1) draw made on the generator's device, then moved to `device`.

    Drawing where the generator lives lets a CPU generator seed sampling on a GPU reproducibly.
    """
    if kind not in ("normal", "uniform"):
        raise ConfigError(f"unknown distribution {kind!r}; choose 'normal' or 'uniform'.")
    where = generator.device if generator is not None else device
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def sample_t(
    batch: int,
    *,
    kind: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw (batch,) training times in (0, 1): sigmoid(N(mean, std^2)) for "logit_normal", U(0, 1) for "uniform"."""
    if kind not in T_SAMPLINGS:
        raise ConfigError(f"unknown t_sampling {kind!r}; choose one of {T_SAMPLINGS}.")
    if batch < 1:
        raise ConfigError(f"sample_t needs batch >= 1, got {batch}.")
    if kind == "uniform":
        return draw("uniform", (batch,), generator=generator, device=device)
    if std <= 0:
        raise ConfigError(f"logit_std must be > 0, got {std}; the paper uses 1.0.")
    return torch.sigmoid(mean + std * draw("normal", (batch,), generator=generator, device=device))


def loss_by_t_bins(t: torch.Tensor, per_sample: torch.Tensor, bins: int = 10) -> dict[str, float]:
    """Mean per-sample loss in each of `bins` equal t-intervals, keyed "t0.0-0.1", ...; empty bins are left out."""
    if bins < 1:
        raise ConfigError(f"loss_by_t_bins needs bins >= 1, got {bins}.")
    if t.shape != per_sample.shape or t.dim() != 1:
        raise ConfigError(
            f"t and per_sample must both be (B,) tensors, got {tuple(t.shape)} and {tuple(per_sample.shape)}."
        )
    t = t.detach().float()
    values = per_sample.detach().float()
    index = torch.clamp((t * bins).floor().long(), 0, bins - 1)
    sums = torch.zeros(bins, device=t.device).index_add_(0, index, values)
    counts = torch.zeros(bins, device=t.device).index_add_(0, index, torch.ones_like(values))
    decimals = 1 if 10 % bins == 0 else 2 if 100 % bins == 0 else 3
    out = {}
    for i, (total, count) in enumerate(zip(sums.tolist(), counts.tolist())):
        if count > 0:
            out[f"t{i / bins:.{decimals}f}-{(i + 1) / bins:.{decimals}f}"] = total / count
    return out


class RectifiedFlow:
    """LightningDiT's training path: x_t = t x_data + (1 - t) noise, the model predicts v = x_data - noise.

    The loss is mean MSE(v_pred, v) plus `cos_weight` times mean(1 - cos(v_pred, v)), the cosine taken
    over channels (dim 1) at every position and then averaged, as in the official training code.
    """

    def __init__(
        self,
        *,
        t_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        cos_weight: float = 1.0,
    ):
        if t_sampling not in T_SAMPLINGS:
            raise ConfigError(f"unknown t_sampling {t_sampling!r}; choose one of {T_SAMPLINGS}.")
        if logit_std <= 0:
            raise ConfigError(f"logit_std must be > 0, got {logit_std}; the paper uses 1.0.")
        if cos_weight < 0:
            raise ConfigError(f"cos_weight must be >= 0 (0 disables the cosine loss), got {cos_weight}.")
        self.t_sampling = t_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.cos_weight = float(cos_weight)

    def __repr__(self) -> str:
        return (f"RectifiedFlow(t_sampling={self.t_sampling!r}, logit_mean={self.logit_mean}, "
                f"logit_std={self.logit_std}, cos_weight={self.cos_weight})")

    @staticmethod
    def interpolate(x_data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The point on the straight path at time t (B,): t * x_data + (1 - t) * noise."""
        t = _expand_like(t, x_data).to(x_data.dtype)
        return t * x_data + (1 - t) * noise

    @staticmethod
    def velocity_target(x_data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The constant velocity of the straight path, d x_t / d t = x_data - noise."""
        return x_data - noise

    def sample_t(self, batch: int, *, generator=None, device="cpu") -> torch.Tensor:
        """Training times drawn with this transport's t-sampling settings."""
        return sample_t(batch, kind=self.t_sampling, mean=self.logit_mean, std=self.logit_std,
                        generator=generator, device=device)

    def loss_terms(self, v_pred: torch.Tensor, v_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample MSE and per-sample (1 - cosine over channels), each (B,)."""
        if v_pred.shape != v_target.shape:
            raise ConfigError(
                f"the model returned shape {tuple(v_pred.shape)} but the target is {tuple(v_target.shape)}; "
                "a velocity model must return a tensor shaped like its input x."
            )
        mse = (v_pred.float() - v_target.float()).pow(2).flatten(1).mean(1)
        cos = 1 - F.cosine_similarity(v_pred.float(), v_target.float(), dim=1)
        if cos.dim() > 1:
            cos = cos.flatten(1).mean(1)
        return mse, cos

    def loss(self, model, x_data: torch.Tensor, y: torch.Tensor | None, *, generator=None) -> dict:
        """One training loss: dict(loss, per_sample (B,), t (B,), mse, cos) for a batch of data."""
        _check_data(x_data)
        t = self.sample_t(x_data.shape[0], generator=generator, device=x_data.device).to(x_data.dtype)
        noise = draw("normal", x_data.shape, generator=generator, device=x_data.device, dtype=x_data.dtype)
        x_t = self.interpolate(x_data, noise, t)
        v_pred = model(x_t, t, y)
        mse, cos = self.loss_terms(v_pred, self.velocity_target(x_data, noise))
        per_sample = mse + self.cos_weight * cos
        return dict(loss=per_sample.mean(), per_sample=per_sample, t=t, mse=mse.mean(), cos=cos.mean())


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear noise schedule (float64, length num_steps); the defaults are those of DDPM and DiT."""
    if num_steps < 2:
        raise ConfigError(f"a DDPM needs num_steps >= 2, got {num_steps}; DiT uses 1000.")
    if not 0 < beta_start < beta_end < 1:
        raise ConfigError(f"need 0 < beta_start < beta_end < 1, got {beta_start} and {beta_end}.")
    # DiT scales the endpoints by 1000 / num_steps so any step count spans the same noise levels.
    scale = 1000 / num_steps
    return torch.linspace(scale * beta_start, min(scale * beta_end, 0.999), num_steps, dtype=torch.float64)


class DDPM:
    """The original DiT objective: discrete steps k = 0..N-1, x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, MSE on eps.

    The model is fed t = 1 - k / N (so t = 1 is still the data end, as for the rectified flow);
    there is no learned variance. `cos` in the returned dict is logged only, not part of the loss.
    """

    def __init__(self, *, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.num_steps = int(num_steps)
        self.betas = linear_betas(self.num_steps, beta_start, beta_end)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    def __repr__(self) -> str:
        return f"DDPM(num_steps={self.num_steps})"

    def model_time(self, step: torch.Tensor) -> torch.Tensor:
        """The float time fed to the model for integer steps k: 1 - k / num_steps (k = 0 is nearly clean)."""
        return 1 - step.double() / self.num_steps

    def step_from_time(self, t: torch.Tensor) -> torch.Tensor:
        """Invert model_time: the integer step k for a model time t."""
        return torch.round((1 - t.double()) * self.num_steps).long().clamp(0, self.num_steps - 1)

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Draw from q(x_k | x_0) with the given noise: sqrt(abar_k) x_0 + sqrt(1 - abar_k) noise."""
        abar = self.alphas_cumprod.to(x0.device)[step.to(x0.device)]
        abar = _expand_like(abar, x0)
        return (abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double()).to(x0.dtype)

    def loss(self, model, x: torch.Tensor, y: torch.Tensor | None, *, generator=None) -> dict:
        """One training loss: dict(loss, per_sample (B,), t (B,) model times, mse, cos) with uniform steps."""
        _check_data(x)
        where = generator.device if generator is not None else x.device
        step = torch.randint(0, self.num_steps, (x.shape[0],), generator=generator, device=where).to(x.device)
        noise = draw("normal", x.shape, generator=generator, device=x.device, dtype=x.dtype)
        t = self.model_time(step).to(x.dtype)
        eps_pred = model(self.q_sample(x, noise, step), t, y)
        if eps_pred.shape != x.shape:
            raise ConfigError(
                f"the model returned shape {tuple(eps_pred.shape)} for input {tuple(x.shape)}; an "
                "epsilon model must return a tensor shaped like its input (no learned-sigma channels)."
            )
        per_sample = (eps_pred.float() - noise.float()).pow(2).flatten(1).mean(1)
        with torch.no_grad():
            cos = 1 - F.cosine_similarity(eps_pred.float(), noise.float(), dim=1)
            cos = cos.flatten(1).mean(1) if cos.dim() > 1 else cos
        return dict(loss=per_sample.mean(), per_sample=per_sample, t=t, mse=per_sample.mean(), cos=cos.mean())


def build_transport(path: str = "rectified_flow", **kwargs):
    """Build the training transport named `path` from TransportConfig-style keywords.

    "rectified_flow" uses t_sampling, logit_mean, logit_std and cos_weight; "ddpm" uses ddpm_steps
    (or its own name, num_steps) and ignores the rectified-flow keys (it always samples its integer
    steps uniformly, as DiT does).
    """
    known = {"t_sampling", "logit_mean", "logit_std", "cos_weight", "ddpm_steps", "num_steps"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown transport setting(s) {unknown}; known: {sorted(known)}.")
    if path == "rectified_flow":
        if "num_steps" in kwargs:
            raise ConfigError("num_steps is a DDPM setting; the rectified flow has continuous t (drop it).")
        return RectifiedFlow(**{k: v for k, v in kwargs.items() if k != "ddpm_steps"})
    if path == "ddpm":
        if kwargs.get("t_sampling", "logit_normal") not in T_SAMPLINGS:
            raise ConfigError(f"unknown t_sampling {kwargs['t_sampling']!r}; choose one of {T_SAMPLINGS}.")
        given = {kwargs[k] for k in ("ddpm_steps", "num_steps") if k in kwargs}
        if len(given) > 1:
            raise ConfigError(f"ddpm_steps and num_steps disagree ({sorted(given)}); give one of them.")
        return DDPM(num_steps=given.pop() if given else 1000)
    raise ConfigError(f"unknown transport path {path!r}; choose one of {PATHS}.")

