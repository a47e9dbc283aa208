"""Named presets: `smoke` (CI, seconds), `lab` (the toy study in ~1 h on 2 CPU cores), `lab_long`, and ImageNet."""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Callable

from .config import (Config, DataConfig, DiTConfig, DiTModelConfig, LatentsConfig, LossConfig, MetricsConfig,
                     ProbeConfig, RepaConfig, SampleConfig, TokenizerConfig, ToyFeatureSection, ToyVFMSection, TrainConfig,
                     VAEConfig, VFConfig, apply_overrides)
from .errors import ConfigError

IMAGENET_TRAIN_IMAGES = 1_281_167
# the multi-factor toy FID network (docs/yardstick.md), as `lab` sets it and as overrides that score another toy
# preset with it: at 1,500 steps (2.4 min on 2 cores) greyscale scores 50x and half the classes dropped 30x its floor
TOY_FID_V2 = ("metrics.toy.version=2", "metrics.toy.steps=1500")

# The smoke preset's study is shrunk further so that each notebook checks its plumbing in about a minute on CI
SMOKE_STUDY = (
    "data.num_train=512", "data.num_test=256", "tokenizer.train.steps=20", "tokenizer.train.batch_size=16",
    "tokenizer.train.eval_images=128", "tokenizer.train.ckpt_every=20", "tokenizer.vf.toy.steps=30",
    "tokenizer.vf.toy.num_images=512", "latents.shard_size=512", "latents.stats_count=512", "dit.train.steps=20",
    "dit.train.batch_size=32", "dit.train.ckpt_every=20", "sample.num_samples=128", "sample.batch_size=128",
    "sample.steps=5", "metrics.num_images=128", "metrics.toy.steps=30", "metrics.toy.num_images=512",
    "tokenizer.probe.images=256", "tokenizer.probe.dit_steps=10", "tokenizer.probe.dit_batch=32",
    "tokenizer.probe.samples=100", "tokenizer.probe.sample_steps=4", "tokenizer.probe.uniformity_n=256",
)


def probe_config(config: Config) -> Config:
    """The config of the probe run: the tokenizer's data at a small size and a tiny DiT at a fixed budget."""
    p = config.tokenizer.probe
    return apply_overrides(config, {
        "data.num_train": min(p.images, config.data.num_train) if config.data.source == "shapes" else p.images,
        "latents.flip": False, "latents.shard_size": p.images, "latents.stats_count": p.images,
        "dit.model.size": p.dit_size, "dit.train.steps": p.dit_steps, "dit.train.batch_size": p.dit_batch,
        "dit.train.lr": 1e-3, "dit.train.warmup_steps": 0, "dit.train.ckpt_every": p.dit_steps,
        "dit.train.progress": False, "dit.train.compile": False, "dit.train.precision": "fp32",
        "dit.ema_decay": 0.0, "sample.num_samples": p.samples, "sample.steps": p.sample_steps,
        "sample.cfg_scale": 1.0, "sample.batch_size": p.samples, "metrics.num_images": max(p.samples, 1000),
    })


def toy_fid_v2(preset: str) -> tuple[str, ...]:
    """The overrides that score a toy preset with the multi-factor network (smoke keeps its own few steps)."""
    return ("metrics.toy.version=2",) if preset == "smoke" else TOY_FID_V2


def toy_fid_v1(preset: str) -> tuple[str, ...]:
    """The overrides that score a toy preset with the shape classifier, the first toy FID network, at its own
    recipe (what `lab_classic` scores with; smoke keeps its own few steps)."""
    return ("metrics.toy.version=1",) if preset == "smoke" else \
        ("metrics.toy.version=1", f"metrics.toy.steps={ToyFeatureSection().steps}")


def _toy_tokenizer(embed_dim: int, ch: int, num_res_blocks: int, ch_mult=(1, 2, 2)) -> VAEConfig:
    """A small f4 KL-VAE for 32 px toy images (8 x 8 latent grid)."""
    return VAEConfig(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=(),
                     z_channels=embed_dim, embed_dim=embed_dim, norm_groups=8)


def smoke() -> Config:
    """Every stage in seconds on a CPU; checks plumbing, not quality."""
    return Config(
        name="smoke",
        data=DataConfig(source="shapes", resolution=32, num_train=2000, num_test=500),
        tokenizer=TokenizerConfig(
            model=_toy_tokenizer(embed_dim=16, ch=16, num_res_blocks=1),
            loss=LossConfig(perceptual_weight=0.0, disc_start=40, disc_ndf=16, disc_layers=2, kl_weight=1e-6),
            vf=VFConfig(foundation="toy", m1=0.0, m2=0.0,
                        toy=ToyVFMSection(width=16, feature_dim=32, steps=60, batch_size=64, num_images=2000)),
            train=TrainConfig(steps=60, batch_size=32, lr=2e-3, betas=(0.9, 0.99), optimizer="adamw",
                              log_every=10, ckpt_every=30, eval_images=200),
        ),
        latents=LatentsConfig(shard_size=1000, stats_count=2000, batch_size=250),
        dit=DiTConfig(model=DiTModelConfig(size="toy-XS/1"),
                      train=TrainConfig(steps=60, batch_size=64, lr=1e-3, betas=(0.9, 0.95), optimizer="adamw",
                                        grad_clip=1.0, log_every=10, ckpt_every=30, eval_images=0),
                      ema_decay=0.9),
        sample=SampleConfig(steps=10, num_samples=250, batch_size=250),
        metrics=MetricsConfig(num_images=200, toy=ToyFeatureSection(width=16, feature_dim=64, steps=60,
                                                                    batch_size=64, num_images=2000)),
    )


def lab() -> Config:
    """A 2-core laptop CPU: the notebooks' study in the paper's regime, trained once into the pretrained pack.

    The outline shapes (ten classes told apart by their outline, the fill pattern random), an f8 tokenizer on 32 px
    (a 4 x 4 grid: d 4 / 8 / 16 keep 48x / 24x / 12x fewer numbers than the image, the paper's f16d16 / d32 / d64),
    16/16/32/32 channels, 2,400 x 32 images, lr 3e-3 cosine, no GAN, the colour-balanced L1, VF to a toy
    foundation model; a toy-S LightningDiT (6,000 x 128, lr 3e-3, EMA 0.998); gFID on 2,000 samples scored by the
    multi-factor toy FID network (docs/yardstick.md). Measured in docs/costs.md: the f8d16 reconstructions keep
    0.99 of the classes and its DiT's samples 0.64 unguided / 0.84 with CFG 3 (one seed).
    """
    config = lab_classic()
    config.name = "lab"
    d, t, m = config.data, config.tokenizer, config.metrics
    d.shape_set = "outline"
    t.model = _toy_tokenizer(embed_dim=16, ch=16, num_res_blocks=1, ch_mult=(1, 1, 2, 2))
    t.train.steps = 2400
    config.dit.model.size = "toy-S/1"
    config.dit.train.batch_size, config.dit.train.lr, config.dit.train.steps = 128, 3e-3, 6000
    config.dit.train.ckpt_every, config.dit.ema_decay = 1000, 0.998
    m.toy.version, m.toy.steps = 2, 1500
    return config


def lab_classic() -> Config:
    """The first toy study: the classic shapes, f4 tokenizers (d4 / d16 / d32 keep 12x / 3x / 1.5x fewer numbers).

    f4 VA-VAE (16/16/32 channels, 1,200 x 32 images, lr 3e-3 cosine, no GAN, the colour-balanced L1 at 0.5
    so that no seed stalls on grey reconstructions; d32 + VF to a toy foundation
    model) and a toy-XS LightningDiT (600 x 64, EMA 0.99), gFID on 2,000 samples. The tokenizer recipe is the
    one `benchmarks/tokenizer_recipe.py` measures against the earlier 300-step recipe; `lab_long` is ~8x the
    DiT budget.
    """
    return Config(
        name="lab_classic",
        data=DataConfig(source="shapes", resolution=32, num_train=20000, num_test=5000),
        tokenizer=TokenizerConfig(
            model=_toy_tokenizer(embed_dim=32, ch=16, num_res_blocks=1, ch_mult=(1, 1, 2)),
            # no LPIPS (no VGG weights offline); chroma weighted up so every seed learns colour (tokenizer/colour.py)
            loss=LossConfig(perceptual_weight=0.0, disc_start=100_000, kl_weight=1e-6, colour_balance=0.5),
            vf=VFConfig(foundation="toy", m1=0.0, m2=0.0, adaptive_every=8,
                        toy=ToyVFMSection(width=32, steps=600, num_images=20000)),
            train=TrainConfig(steps=1200, batch_size=32, lr=3e-3, betas=(0.9, 0.99), optimizer="adamw",
                              lr_schedule="cosine", warmup_steps=25, grad_clip=1.0, log_every=50,
                              ckpt_every=300, eval_images=1000),
            probe=ProbeConfig(dit_steps=100),
        ),
        latents=LatentsConfig(flip=False, shard_size=10000, stats_count=10000, batch_size=500),
        dit=DiTConfig(model=DiTModelConfig(size="toy-XS/1", qk_norm=True),
                      train=TrainConfig(steps=600, batch_size=64, lr=3e-3, betas=(0.9, 0.95), optimizer="adamw",
                                        warmup_steps=25, grad_clip=1.0, log_every=25, ckpt_every=200,
                                        eval_images=0),
                      ema_decay=0.99),
        sample=SampleConfig(steps=20, num_samples=2000, batch_size=500),
        metrics=MetricsConfig(num_images=2000),
    )


def lab_long() -> Config:
    """The toy study at ~8x the lab budget: ~20 min per tokenizer + DiT pipeline on 2 CPU cores, ~1 min on a GPU."""
    return Config(
        name="lab_long",
        data=DataConfig(source="shapes", resolution=32, num_train=30000, num_test=5000),
        tokenizer=TokenizerConfig(
            model=_toy_tokenizer(embed_dim=32, ch=16, num_res_blocks=1),
            loss=LossConfig(perceptual_weight=0.0, disc_start=100_000, kl_weight=1e-6),
            vf=VFConfig(foundation="toy", m1=0.0, m2=0.0, adaptive_every=4),
            train=TrainConfig(steps=1000, batch_size=64, lr=2e-3, betas=(0.9, 0.99), optimizer="adamw",
                              lr_schedule="cosine", warmup_steps=50, grad_clip=1.0, log_every=25,
                              ckpt_every=250, eval_images=2000),
        ),
        latents=LatentsConfig(shard_size=10000, stats_count=10000, batch_size=500),
        dit=DiTConfig(model=DiTModelConfig(size="toy-S/1", qk_norm=True),
                      train=TrainConfig(steps=1000, batch_size=128, lr=1e-3, betas=(0.9, 0.95), optimizer="adamw",
                                        warmup_steps=50, grad_clip=1.0, log_every=25, ckpt_every=250,
                                        eval_images=0),
                      ema_decay=0.99),
        sample=SampleConfig(steps=25, num_samples=2000, batch_size=500),
        metrics=MetricsConfig(num_images=2000),
    )


# -- ImageNet: the official hustvl/LightningDiT recipe, field by field. Each value says where the official code
# sets it; configs/reference_imagenet256.yaml cites file and line, and docs/imagenet.md lists what is kept different.
OFFICIAL_SAMPLING_STEPS = 250  # num_sampling_steps of the official configs: grid points (transport/integrators.py)


def _imagenet_steps(epochs: int, batch: int) -> int:
    """Optimiser steps of `epochs` passes over ImageNet's training images at a global batch."""
    return epochs * IMAGENET_TRAIN_IMAGES // batch


def _fid_sampling(epochs: int) -> SampleConfig:
    """The official FID sampling of the 64- or 800-epoch LightningDiT-XL (configs/reproductions/*_cfg.yaml).

    Euler on 250 grid points (249 steps), shift 0.3, CFG 10.0 from t >= 0.10 (64 epochs; the main config
    says 0.11) or 6.7 from t >= 0.125 (800 epochs), on the first 3 channels as forward_with_cfg does.
    """
    scale, start = (10.0, 0.10) if epochs <= 64 else (6.7, 0.125)
    return SampleConfig(sampler="euler", steps=OFFICIAL_SAMPLING_STEPS - 1, cfg_scale=scale,
                        cfg_interval_start=start, cfg_channels=3, timestep_shift=0.3, num_samples=50_000,
                        batch_size=250)


def _imagenet(embed_dim: int, vf: bool, epochs: int) -> Config:
    """The paper's f16 tokenizer on ImageNet 256 as the official code trains it, with or without the DINOv2 VF loss.

    Its DiT and sampling sections are LightningDiT-XL/1's 64-epoch recipe (80k steps at batch 1024).
    """
    batch = 256
    dit = DiTConfig(model=DiTModelConfig(size="XL/1", qk_norm=False))  # the released switches
    dit.train.grad_clip = 0.0  # the official train.py clips only if max_grad_norm is set, and no config sets it
    return Config(
        name=f"imagenet256_f16d{embed_dim}{'_vf' if vf else ''}",
        # the official tokenizer data: short side to 256, random 256 crop, no flip (taming's ImagePaths)
        data=DataConfig(source="imagefolder", root=None, resolution=256, num_workers=8, hflip=False, crop="random"),
        tokenizer=TokenizerConfig(
            model=VAEConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                            z_channels=embed_dim, embed_dim=embed_dim, norm_groups=32),
            loss=LossConfig(perceptual_weight=1.0, disc_start=5001, disc_weight=0.5, kl_weight=1e-6),
            vf=VFConfig(enabled=vf, foundation="dinov2_vitl14", m1=0.5, m2=0.25, weight=0.1, preprocess="official"),
            train=TrainConfig(steps=_imagenet_steps(epochs, batch), batch_size=batch, lr=1e-4, betas=(0.5, 0.9),
                              optimizer="adam", precision="fp32", log_every=50, ckpt_every=5000,
                              eval_every=25_000, eval_images=10_000),
        ),
        # the official extract_features.py caches a posterior sample of each image and of its flip
        latents=LatentsConfig(sample_posterior=True, shard_size=10000, stats_count=10000, batch_size=256),
        dit=dit,
        sample=_fid_sampling(64),
        metrics=MetricsConfig(fid_extractor="inception", num_images=50_000),
    )


# The released VA-VAE f16d32 (vavae/configs/f16d32_vfdinov2_long.yaml): three stages, each initialised from the
# weights of the stage before. name -> (epochs, VF weight, m1 (cos margin), m2 (distance margin), disc_start,
# the stage it starts from)
VAVAE_STAGES: dict[str, tuple[int, float, float, float, int, str | None]] = {
    "imagenet256_f16d32_vf_stage1": (100, 0.5, 0.0, 0.0, 5001, None),
    "imagenet256_f16d32_vf_stage2": (15, 0.1, 0.0, 0.0, 1, "imagenet256_f16d32_vf_stage1"),
    "imagenet256_f16d32_vf": (15, 0.1, 0.5, 0.25, 1, "imagenet256_f16d32_vf_stage2"),
}
# the fields a stage of a chain sets itself; every other field of a run carries over to the stages before it
STAGE_FIELDS = ("tokenizer.train.steps", "tokenizer.vf.weight", "tokenizer.vf.m1", "tokenizer.vf.m2",
                "tokenizer.loss.disc_start", "tokenizer.init_from")


def _vavae_stage(name: str) -> Config:
    """One stage of the released VA-VAE's schedule (VAVAE_STAGES); the last is `imagenet256_f16d32_vf`."""
    epochs, weight, m1, m2, disc_start, init = VAVAE_STAGES[name]
    config = _imagenet(32, True, epochs)
    config.name = name
    t = config.tokenizer
    t.vf.weight, t.vf.m1, t.vf.m2, t.loss.disc_start, t.init_from = weight, m1, m2, disc_start, init
    return config


def previous_stage(config: Config) -> Config:
    """The run whose weights `config` starts from: its tokenizer.init_from preset's STAGE_FIELDS, the rest of `config`.

    So `imagenet256_f16d32_vf data.root=X tokenizer.vf.pretrained_path=Y` chains back to stage 2 and stage 1
    trained with the same data and files.
    """
    name = config.tokenizer.init_from
    if name is None or "/" in name or name not in PRESETS:
        raise ConfigError(f"tokenizer.init_from={name!r} names no preset, so there is no previous stage to build; "
                          "use a preset name such as imagenet256_f16d32_vf_stage1")
    earlier, out = get_preset(name), copy.deepcopy(config)
    out.name = earlier.name
    for dotted in STAGE_FIELDS:
        *parents, leaf = dotted.split(".")
        src, dst = earlier, out
        for part in parents:
            src, dst = getattr(src, part), getattr(dst, part)
        setattr(dst, leaf, getattr(src, leaf))
    return out


def _lightningdit(size: str, epochs: int) -> Config:
    """LightningDiT-{B,L,XL}/1 on the released VA-VAE f16d32 latents (docs/paper.md §5, §6), with FID sampling settings.

    64 epochs ~ 80k steps and 800 epochs ~ 1M steps at the global batch 1024; sampling as the official
    reproduction configs (`_fid_sampling`).
    """
    config = _vavae_stage("imagenet256_f16d32_vf")
    config.name = f"imagenet256_lightningdit_{size.lower()}_{epochs}ep"
    config.dit.model = DiTModelConfig(size=f"{size}/1", qk_norm=False)
    config.dit.train.steps = round(epochs * IMAGENET_TRAIN_IMAGES / config.dit.train.batch_size / 1000) * 1000
    config.dit.train.ckpt_every = 20_000
    config.sample = _fid_sampling(epochs)
    return config


def _with_repa(config: Config) -> Config:
    """`config` with REPA as published (sihyun-yu/REPA README and train.py): DINOv2-B/14 patch features (224 px, 16 x 16
    tokens), the tokens after block 8 through a 2048-wide SiLU MLP, weight 0.5; the rest of the recipe is kept."""
    config.name += "_repa"
    config.dit.repa = RepaConfig(weight=0.5, depth=8, projector_dim=2048, foundation="dinov2_vitb14")
    return config


PRESETS: dict[str, Callable[[], Config]] = {
    "smoke": smoke,
    "lab": lab,
    "lab_classic": lab_classic,
    "lab_long": lab_long,
    # the released VA-VAE: three stages, `imagenet256_f16d32_vf` is the last (100 + 15 + 15 epochs)
    **{name: (lambda name=name: _vavae_stage(name)) for name in VAVAE_STAGES},
    # the Table 2 study (50 epochs each)
    "imagenet256_f16d32": lambda: _imagenet(32, False, 50),
    "imagenet256_f16d16": lambda: _imagenet(16, False, 50),
    "imagenet256_f16d16_vf": lambda: _imagenet(16, True, 50),
    "imagenet256_f16d64": lambda: _imagenet(64, False, 50),
    "imagenet256_f16d64_vf": lambda: _imagenet(64, True, 50),
    # LightningDiT on the released tokenizer: the system results (docs/paper.md §6) and the B/L sizes of Table 2
    **{f"imagenet256_lightningdit_{size.lower()}_{ep}ep": (lambda size=size, ep=ep: _lightningdit(size, ep))
       for size in ("B", "L", "XL") for ep in (64, 800)},
    # REPA beside VA-VAE: LightningDiT-XL with REPA on the released VA-VAE, and on the plain f16d32 tokenizer
    **{f"imagenet256_lightningdit_xl_{ep}ep_repa": (lambda ep=ep: _with_repa(_lightningdit("XL", ep)))
       for ep in (64, 800)},
    "imagenet256_f16d32_repa": lambda: _with_repa(_imagenet(32, False, 50)),
}


# the first toy study, by the name of the preset that moved on: what notebooks 03-05 read until they move to lab's regime
CLASSIC = {"lab": "lab_classic"}


def classic(preset: str) -> str:
    """The preset of the first toy study for `preset`: lab_classic for lab; smoke and any other preset is itself."""
    return CLASSIC.get(preset, preset)


PRESET_ENV = "VAVAE_LAB_PRESET"  # the notebooks' preset: a name of PRESETS or a YAML file


def env_preset(default: str = "lab") -> str:
    """The preset the notebooks run: $VAVAE_LAB_PRESET (a preset name or a YAML file), else `default`."""
    value = os.environ.get(PRESET_ENV, "").strip()
    if not value:
        return default
    if value in PRESETS or Path(value).is_file():
        return value
    raise ConfigError(f"{PRESET_ENV}={value!r} names no preset and no YAML file; {preset_hint(value)} "
                      f"(unset it for {default})")


def preset_hint(text: str) -> str:
    """'did you mean lab?' for the presets closest to `text`, else the list of presets."""
    close = difflib.get_close_matches(text, list(PRESETS), n=3, cutoff=0.4)
    return f"did you mean {' or '.join(close)}?" if close else f"presets: {', '.join(PRESETS)}"


def get_preset(name: str) -> Config:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
