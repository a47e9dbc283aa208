"""Named presets: `smoke` (CI, seconds), `lab` (the toy study in ~1 h on 2 CPU cores), `lab_long`, and ImageNet."""
from __future__ import annotations

from typing import Callable

from .config import (Config, DataConfig, DiTConfig, DiTModelConfig, LatentsConfig, LossConfig, MetricsConfig,
                     ProbeConfig, SampleConfig, TokenizerConfig, ToyFeatureSection, ToyVFMSection, TrainConfig,
                     VAEConfig, VFConfig)
from .errors import ConfigError

IMAGENET_TRAIN_IMAGES = 1_281_167


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
    """A 2-core laptop CPU: the notebooks' study, trained once into the pretrained pack (data/pack).

    f4 VA-VAE (16/16/32 channels, 1,200 x 32 images, lr 3e-3 cosine, no GAN; d32 + VF to a toy foundation
    model) and a toy-XS LightningDiT (600 x 64, EMA 0.99), gFID on 2,000 samples. The tokenizer recipe is the
    one `benchmarks/tokenizer_recipe.py` measures against the earlier 300-step recipe; `lab_long` is ~8x the
    DiT budget.
    """
    return Config(
        name="lab",
        data=DataConfig(source="shapes", resolution=32, num_train=20000, num_test=5000),
        tokenizer=TokenizerConfig(
            model=_toy_tokenizer(embed_dim=32, ch=16, num_res_blocks=1, ch_mult=(1, 1, 2)),
            loss=LossConfig(perceptual_weight=0.0, disc_start=100_000, kl_weight=1e-6),
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


def _imagenet(embed_dim: int, vf: bool, epochs: int) -> Config:
    """The paper's f16 tokenizer recipe on ImageNet 256 (NOTES §3), with or without the DINOv2 VF loss."""
    batch = 256
    return Config(
        name=f"imagenet256_f16d{embed_dim}{'_vf' if vf else ''}",
        data=DataConfig(source="imagefolder", root=None, resolution=256, num_workers=8),
        tokenizer=TokenizerConfig(
            model=VAEConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(16,),
                            z_channels=embed_dim, embed_dim=embed_dim, norm_groups=32),
            loss=LossConfig(perceptual_weight=1.0, disc_start=5001, disc_weight=0.5, kl_weight=1e-6),
            vf=VFConfig(enabled=vf, foundation="dinov2_vitl14", m1=0.5, m2=0.25, weight=0.1),
            train=TrainConfig(steps=epochs * IMAGENET_TRAIN_IMAGES // batch, batch_size=batch, lr=1e-4,
                              betas=(0.5, 0.9), optimizer="adam", precision="fp32", log_every=50,
                              ckpt_every=5000, eval_every=25_000, eval_images=10_000),
        ),
        latents=LatentsConfig(shard_size=10000, stats_count=10000, batch_size=256),
        # LightningDiT-XL/1, 64 epochs (80k steps at batch 1024); sampling as for FID 2.11 (NOTES §5)
        dit=DiTConfig(model=DiTModelConfig(size="XL/1", qk_norm=False)),  # the released switches
        sample=SampleConfig(sampler="euler", steps=250, cfg_scale=10.0, cfg_interval_start=0.11,
                            timestep_shift=0.3, num_samples=50_000, batch_size=250),
        metrics=MetricsConfig(fid_extractor="inception", num_images=50_000),
    )


def _lightningdit(size: str, epochs: int) -> Config:
    """LightningDiT-{B,L,XL}/1 on the released VA-VAE f16d32 latents (NOTES §5, §6), with its FID sampling settings.

    64 epochs ~ 80k steps and 800 epochs ~ 1M steps at the global batch 1024. Sampling: Euler, 250 steps,
    shift 0.3, CFG 10.0 on t >= 0.11 (64 ep, FID 2.11) or 6.7 on t >= 0.125 (800 ep, FID 1.35, the official
    reproduction config), guiding the first 3 channels like the official code that produced those numbers.
    """
    config = _imagenet(32, True, 125)
    config.name = f"imagenet256_lightningdit_{size.lower()}_{epochs}ep"
    config.dit.model = DiTModelConfig(size=f"{size}/1", qk_norm=False)
    config.dit.train.steps = round(epochs * IMAGENET_TRAIN_IMAGES / config.dit.train.batch_size / 1000) * 1000
    config.dit.train.ckpt_every = 20_000
    cfg_scale, interval = (10.0, 0.11) if epochs <= 64 else (6.7, 0.125)
    config.sample = SampleConfig(sampler="euler", steps=250, cfg_scale=cfg_scale, cfg_interval_start=interval,
                                 cfg_channels=3, timestep_shift=0.3, num_samples=50_000, batch_size=250)
    return config


PRESETS: dict[str, Callable[[], Config]] = {
    "smoke": smoke,
    "lab": lab,
    "lab_long": lab_long,
    # the released VA-VAE (125 epochs) and the Table 2 study (50 epochs each)
    "imagenet256_f16d32_vf": lambda: _imagenet(32, True, 125),
    "imagenet256_f16d32": lambda: _imagenet(32, False, 50),
    "imagenet256_f16d16": lambda: _imagenet(16, False, 50),
    "imagenet256_f16d16_vf": lambda: _imagenet(16, True, 50),
    "imagenet256_f16d64": lambda: _imagenet(64, False, 50),
    "imagenet256_f16d64_vf": lambda: _imagenet(64, True, 50),
    # LightningDiT on the released tokenizer: the system results (NOTES §6) and the B/L sizes of Table 2
    **{f"imagenet256_lightningdit_{size.lower()}_{ep}ep": (lambda size=size, ep=ep: _lightningdit(size, ep))
       for size in ("B", "L", "XL") for ep in (64, 800)},
}


def get_preset(name: str) -> Config:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
