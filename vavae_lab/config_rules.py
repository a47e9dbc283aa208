"""The config's gate: every value with a fixed valid range or set of choices, checked when a config is loaded."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .choices import (CROPS, DEVICE_TYPES, DISC_LOSSES, DIT_SIZES, LR_SCHEDULES, MLP_KINDS, NORM_KINDS, OPTIMIZERS,
                      PATHS, POS_KINDS, PRECISIONS, PREPROCESS, PROJECTIONS, SAMPLERS, SHAPE_SETS, SOURCES,
                      T_SAMPLINGS, TOY_FEATURE_VERSIONS)
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config


def _choice(*options):
    """A rule that the value is one of `options`."""
    return lambda v: v in options, "one of " + ", ".join(options)


_POSITIVE = (lambda v: v > 0, "> 0")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")


def _train_rules(prefix: str) -> list:
    """The rules of a train section (tokenizer.train or dit.train)."""
    return [(f"{prefix}.{k}", *rule) for k, rule in (
        ("steps", _POSITIVE), ("batch_size", _POSITIVE), ("lr", _POSITIVE), ("log_every", _POSITIVE),
        ("ckpt_every", _POSITIVE), ("warmup_steps", _NON_NEGATIVE), ("grad_clip", _NON_NEGATIVE),
        ("micro_batch", _NON_NEGATIVE),
        ("eval_every", _NON_NEGATIVE), ("eval_images", _NON_NEGATIVE), ("optimizer", _choice(*OPTIMIZERS)),
        ("lr_schedule", _choice(*LR_SCHEDULES)), ("precision", _choice(*PRECISIONS)))]


def _section_rules(prefix: str, rule, *keys: str) -> list:
    """The same rule for several keys of one section."""
    return [(f"{prefix}.{k}", *rule) for k in keys]


def _init_source(value) -> bool:
    """tokenizer.init_from: unset, a run folder path (it holds a "/") or a preset name."""
    from .presets import PRESETS

    return value is None or "/" in value or value in PRESETS


RULES = [
    ("data.source", *_choice(*SOURCES)), ("data.resolution", *_POSITIVE),
    ("data.crop", *_choice(*CROPS)), ("data.shape_set", *_choice(*SHAPE_SETS)),
    ("tokenizer.vf.preprocess", *_choice(*PREPROCESS)), ("tokenizer.vf.projection", *_choice(*PROJECTIONS)),
    *_section_rules("tokenizer.vf", _NON_NEGATIVE, "m1", "m2", "w_mcos", "w_mdms", "weight", "adaptive_max"),
    ("tokenizer.vf.adaptive_every", *_POSITIVE),
    *_section_rules("tokenizer.model", _POSITIVE, "ch", "num_res_blocks", "z_channels", "embed_dim", "norm_groups"),
    ("tokenizer.model.dropout", *_UNIT), ("tokenizer.loss.disc_loss", *_choice(*DISC_LOSSES)),
    *_section_rules("tokenizer.loss", _NON_NEGATIVE, "pixel_weight", "perceptual_weight", "kl_weight",
                    "disc_weight", "disc_factor"),
    ("tokenizer.init_from", _init_source, "null, a preset name (e.g. imagenet256_f16d32_vf_stage1) or a tokenizer "
                                          "run folder path holding a '/' (e.g. runs/stage1)"),
    ("tokenizer.loss.colour_balance", *_NON_NEGATIVE),
    ("data.num_train", *_POSITIVE), ("data.num_classes", *_POSITIVE),
    *_train_rules("tokenizer.train"), *_train_rules("dit.train"),
    ("latents.shard_size", *_POSITIVE), ("latents.stats_count", *_POSITIVE), ("latents.batch_size", *_POSITIVE),
    ("dit.model.size", *_choice(*DIT_SIZES)),
    ("dit.model.mlp", *_choice(*MLP_KINDS)), ("dit.model.norm", *_choice(*NORM_KINDS)),
    ("dit.model.pos", *_choice(*POS_KINDS)), ("dit.model.class_dropout", *_UNIT), ("dit.model.mlp_ratio", *_POSITIVE),
    ("dit.transport.path", *_choice(*PATHS)),
    ("dit.transport.t_sampling", *_choice(*T_SAMPLINGS)), ("dit.transport.logit_std", *_POSITIVE),
    ("dit.repa.weight", *_NON_NEGATIVE), ("dit.repa.depth", *_POSITIVE), ("dit.repa.projector_dim", *_POSITIVE),
    ("dit.ema_decay", *_UNIT), ("dit.seed", lambda v: v is None or v >= 0, ">= 0, or null for the run's seed"),
    ("dit.snapshots", lambda v: all(s > 0 for s in v), "a list of positive step counts, e.g. [75,150,300]"),
    ("sample.sampler", *_choice(*SAMPLERS)), ("sample.steps", *_POSITIVE),
    ("sample.cfg_scale", lambda v: v >= 1, ">= 1 (1.0 = no guidance; below 1 the official code does not guide, "
                                          "inference.py 125, so it is refused here; the paper samples with 10.0)"),
    ("sample.cfg_interval_start", lambda v: 0 <= v <= 1, "in [0, 1] (t = 1 is data; the paper uses 0.11)"),
    ("sample.cfg_channels", *_NON_NEGATIVE),
    ("sample.timestep_shift", lambda v: v > 0, "> 0 (1.0 = no shift; the paper uses 0.3)"),
    ("metrics.toy.version", lambda v: v in TOY_FEATURE_VERSIONS,
     "1 (the shape classifier) or 2 (one head per visible factor, docs/yardstick.md)"),
    ("sample.num_samples", *_POSITIVE), ("sample.batch_size", *_POSITIVE),
    ("sample.atol", *_POSITIVE), ("sample.rtol", *_POSITIVE), ("sample.max_nfe", *_POSITIVE),
    ("device", lambda v: v in DEVICE_TYPES or (v.startswith("cuda:") and v[5:].isdigit()),
     ", ".join(DEVICE_TYPES) + " or cuda:<index>"),
]


def validate(config: "Config") -> "Config":
    """Check every value with a fixed valid range or set of choices; the first bad one raises ConfigError."""
    for key, ok, requirement in RULES:
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {requirement}; "
                              f"fix it with the override {key}=<value> or in the YAML file")
    vf = config.tokenizer.vf
    if vf.enabled and not (vf.use_mcos or vf.use_mdms):
        raise ConfigError("tokenizer.vf.use_mcos=false and tokenizer.vf.use_mdms=false leave the VF loss 0; enable "
                          "one of them, or train without it with tokenizer.vf.enabled=false")
    return config
