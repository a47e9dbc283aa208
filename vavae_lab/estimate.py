"""Rough run-time estimates on a 2-core laptop CPU, scaled from a few measured runs (a guide, not a promise)."""
from __future__ import annotations

from .build import downsampling
from .config import Config

# Measured on the 2-core CPU this repo is developed on (one training process, fp32), as total seconds of a run:
# two presets per stage, so the cost per image is a straight line through both (small models are overhead-bound).
TOKENIZER_RUNS = {  # level cost (see _level_cost) at 32 px -> (steps, batch, seconds)
    400.0: (2400, 32, 300.0),  # lab: f8, ch 16 x (1, 1, 2, 2), no VF (251-335 s; one thread, a second run beside it)
    576.0: (1000, 64, 8.6 * 60),  # lab_long: ch 16 x (1, 2, 2), VF to the toy VFM
}
DIT_RUNS = {  # depth x width^2 on an 8 x 8 latent grid, patch 1 -> (steps, batch, seconds)
    2 * 64 ** 2: (600, 64, 85.0),  # lab_classic: toy-XS/1 (84.8-84.9 s on d4 latents)
    4 * 96 ** 2: (1000, 128, 8.5 * 60),  # lab_long: toy-S/1
}
SMOKE_PIPELINE_MINUTES = 65 / 60  # `make smoke`: every stage of the smoke preset end to end

STAGES = ("tokenizer", "dit", "pipeline")


def _ms_per_image(runs: dict, cost: float) -> float:
    """Milliseconds per training image at a model cost: the line through the two measured runs (never below 0.1)."""
    (c0, (s0, b0, t0)), (c1, (s1, b1, t1)) = sorted(runs.items())
    m0, m1 = 1000 * t0 / (s0 * b0), 1000 * t1 / (s1 * b1)
    return max(0.1, m0 + (m1 - m0) * (cost - c0) / (c1 - c0))


def _level_cost(ch: int, ch_mult) -> float:
    """Conv cost per pixel of a VAE: each level's width squared, divided by 4 per halving of the resolution."""
    return sum((ch * mult) ** 2 / 4 ** i for i, mult in enumerate(ch_mult))


def _tokenizer_minutes(config: Config, steps: int) -> float:
    """Images processed x ms per 32 px image at this VAE's level cost x pixels relative to 32 px."""
    tc, m = config.tokenizer.train, config.tokenizer.model
    pixels = (config.data.resolution / 32) ** 2
    return steps * tc.batch_size * _ms_per_image(TOKENIZER_RUNS, _level_cost(m.ch, m.ch_mult)) * pixels / 60000


def _dit_minutes(config: Config, steps: int) -> float:
    """Images processed x ms per image at this DiT's depth x width^2 x tokens relative to an 8 x 8 grid."""
    from .diffusion.lightningdit import DIT_SIZES

    tc = config.dit.train
    shape = DIT_SIZES.get(config.dit.model.size, DIT_SIZES["toy-S/1"])
    tokens = (config.data.resolution // downsampling(config) // shape["patch_size"]) ** 2
    cost = shape["depth"] * shape["hidden_size"] ** 2
    return steps * tc.batch_size * _ms_per_image(DIT_RUNS, cost) * tokens / 64 / 60000


def _smoke_overhead(config_factory) -> float:
    """Minutes of the smoke pipeline not spent in the two training loops (toy networks, latents, sampling, FID)."""
    smoke = config_factory()
    return max(0.0, SMOKE_PIPELINE_MINUTES - _tokenizer_minutes(smoke, smoke.tokenizer.train.steps)
               - _dit_minutes(smoke, smoke.dit.train.steps))


def estimate_minutes(config: Config, stage: str, *, start_step: int = 0) -> float:
    """Rough minutes a stage takes on a 2-core CPU: 'tokenizer', 'dit' (from `start_step` on) or 'pipeline'.

    Linear in steps x batch size, and in the model's rough cost per image (pixels x width^2 for the
    tokenizer, depth x width^2 x tokens for the DiT); calibrated on the lab, lab_long and smoke presets. Expect
    +-50% on other machines; a GPU is far faster.
    """
    if stage == "tokenizer":
        return _tokenizer_minutes(config, max(0, config.tokenizer.train.steps - start_step))
    if stage == "dit":
        return _dit_minutes(config, max(0, config.dit.train.steps - start_step))
    if stage == "pipeline":
        from .presets import smoke

        return (_tokenizer_minutes(config, config.tokenizer.train.steps)
                + _dit_minutes(config, config.dit.train.steps) + _smoke_overhead(smoke))
    from .errors import ConfigError

    raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")


def format_minutes(minutes: float) -> str:
    """'40 s', '8.6 min', '3.2 h', '12 days' or '160 years', whichever reads best."""
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    if minutes < 90:
        return f"{minutes:.1f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    if minutes < 365 * 1440:
        return f"{minutes / 1440:.0f} days"
    return f"{minutes / (365 * 1440):.0f} years"


def describe_estimate(config: Config, stage: str, *, start_step: int = 0) -> str:
    """One line for the start of a run: the rough remaining time on a 2-core CPU."""
    steps = (config.tokenizer.train if stage == "tokenizer" else config.dit.train).steps
    return (f"rough estimate: ~{format_minutes(estimate_minutes(config, stage, start_step=start_step))} for "
            f"steps {start_step}..{steps} on a 2-core CPU (scaled from measured lab runs; see vavae_lab.estimate)")


def dit_cost(config: Config) -> dict:
    """Parameters of the config's DiT and FLOPs of one training step, counted, not modelled.

    torch.utils.flop_counter counts every matrix product and convolution of the forward and backward pass of the
    training loss on one global batch (dit.train.batch_size) of latents of the tokenizer's shape (C = embed_dim,
    the resolution over the tokenizer's downsampling), with attention in PyTorch's math kernel so that its
    products are counted too (a fused kernel's are not). It runs on the meta device: no weights, no compute, the
    same count for any model size in seconds; element-wise work (norms, activations, the optimizer) is left out.
    Returns {"params", "flops_per_step", "batch", "latent_shape"}.
    """
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from .build import build_dit_for, build_transport_for

    side = config.data.resolution // downsampling(config)
    shape, batch, classes = (config.tokenizer.model.embed_dim, side, side), config.dit.train.batch_size, \
        config.data.num_classes
    with torch.device("meta"):
        model = build_dit_for(config, shape, classes)
        x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            build_transport_for(config).loss(model, x, y)["loss"].backward()
    return {"params": sum(p.numel() for p in model.parameters()), "flops_per_step": counter.get_total_flops(),
            "batch": batch, "latent_shape": list(shape)}
