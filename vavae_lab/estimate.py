"""Rough run-time estimates on a 2-core laptop CPU, scaled from a few measured runs (a guide, not a promise)."""
from __future__ import annotations

from .config import Config

# Measured on the 2-core CPU this repo is developed on (one training process, fp32):
TOKENIZER_MINUTES = 8.6  # lab tokenizer (f4, ch 16, 32 px, VF to the toy VFM): 1000 steps at batch 64
TOKENIZER_REF = dict(steps=1000, batch=64, resolution=32, ch=16)
DIT_MINUTES = 8.5  # lab DiT toy-S/1 on 8 x 8 latents: 1000 steps at batch 128
DIT_REF = dict(steps=1000, batch=128, depth=4, hidden=96, tokens=64)
SMOKE_PIPELINE_MINUTES = 65 / 60  # `make smoke`: every stage of the smoke preset end to end

STAGES = ("tokenizer", "dit", "pipeline")


def _tokenizer_minutes(config: Config, steps: int) -> float:
    """Images processed times pixels times channel width squared, relative to the lab tokenizer."""
    tc, m, ref = config.tokenizer.train, config.tokenizer.model, TOKENIZER_REF
    work = (steps * tc.batch_size) / (ref["steps"] * ref["batch"])
    size = (config.data.resolution / ref["resolution"]) ** 2 * (m.ch / ref["ch"]) ** 2
    return TOKENIZER_MINUTES * work * size


def _dit_minutes(config: Config, steps: int) -> float:
    """Images processed times depth x width^2 x tokens, relative to the lab DiT (toy-S/1 on 8 x 8 latents)."""
    from .diffusion.lightningdit import DIT_SIZES

    tc, ref = config.dit.train, DIT_REF
    shape = DIT_SIZES.get(config.dit.model.size, DIT_SIZES["toy-S/1"])
    f = 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    tokens = (config.data.resolution // f // shape["patch_size"]) ** 2
    work = (steps * tc.batch_size) / (ref["steps"] * ref["batch"])
    size = (shape["depth"] * shape["hidden_size"] ** 2 * tokens) / (ref["depth"] * ref["hidden"] ** 2 * ref["tokens"])
    return DIT_MINUTES * work * size


def _smoke_overhead(config_factory) -> float:
    """Minutes of the smoke pipeline not spent in the two training loops (toy networks, latents, sampling, FID)."""
    smoke = config_factory()
    return max(0.0, SMOKE_PIPELINE_MINUTES - _tokenizer_minutes(smoke, smoke.tokenizer.train.steps)
               - _dit_minutes(smoke, smoke.dit.train.steps))


def estimate_minutes(config: Config, stage: str, *, start_step: int = 0) -> float:
    """Rough minutes a stage takes on a 2-core CPU: 'tokenizer', 'dit' (from `start_step` on) or 'pipeline'.

    Linear in steps x batch size, and in the model's rough cost per image (pixels x width^2 for the
    tokenizer, depth x width^2 x tokens for the DiT); calibrated on the lab and smoke presets. Expect
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
