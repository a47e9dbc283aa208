"""Typed configuration: dataclass sections, YAML load/save and `key.sub=value` overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .config_rules import validate
from .errors import ConfigError
from .toy_recipes import ToyFeatureSection, ToyVFMSection
from .typed import typed_from_dict, unknown_key


@dataclass
class DataConfig:
    """Where images come from and how they are prepared."""

    source: str = "shapes"  # "shapes" (embedded, generated) or "imagefolder" (ImageNet train layout)
    root: Optional[str] = None  # folder of class sub-folders, for source=imagefolder
    resolution: int = 32
    num_train: int = 30000  # shapes only
    num_test: int = 5000  # shapes only
    num_classes: int = 10  # shapes only; imagefolder counts its class folders
    # shapes only: which classes (data/shapes.SET_CLASSES): "classic" (three told apart by fine texture) or
    # "outline" (ten told apart by outline, fill pattern random for every shape)
    shape_set: str = "classic"
    seed: int = 0
    hflip: bool = True  # random horizontal flip while training
    strict: bool = False  # raise on a corrupt image instead of skipping it
    num_workers: int = 0  # DataLoader workers for imagefolder
    # how imagefolder images are cropped for the tokenizer: "center" (ADM centre crop) or "random" (short side
    # resized to `resolution` bilinearly, then a random square crop: the official VA-VAE training data). Latents
    # are always extracted from centre crops.
    crop: str = "center"


@dataclass
class VAEConfig:
    """LDM KL-autoencoder architecture (docs/paper.md §3)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 32
    embed_dim: int = 32
    dropout: float = 0.0
    norm_groups: int = 32


@dataclass
class LossConfig:
    """Reconstruction, KL and GAN terms of the tokenizer objective (docs/paper.md §3)."""

    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0  # LPIPS; needs VGG16 weights (lpips_path or online)
    lpips_path: Optional[str] = None
    logvar_init: float = 0.0
    kl_weight: float = 1e-6
    disc_start: int = 5001
    disc_weight: float = 0.5
    disc_factor: float = 1.0
    disc_layers: int = 3
    disc_ndf: int = 64
    disc_loss: str = "hinge"
    disc_lr: Optional[float] = None  # None: the same as the autoencoder
    # 0: L1 on RGB (LDM, official); a > 0: L1 on the data's principal colour components, weighted by
    # (s_max / s_k) ** a (vavae_lab.tokenizer.colour; the toy presets use it so chroma is learned from the start)
    colour_balance: float = 0.0


@dataclass
class VFConfig:
    """Vision-foundation alignment loss (docs/paper.md §2)."""

    enabled: bool = True
    foundation: str = "dinov2_vitl14"  # registry name, any timm model, "toy" or "toy_random"
    pretrained_path: Optional[str] = None  # local weights file for a timm model
    projection: str = "reverse"  # "reverse" (z -> VFM dim) or "forward" (VFM -> z dim)
    use_mcos: bool = True
    use_mdms: bool = True
    m1: float = 0.5
    m2: float = 0.25
    w_mcos: float = 1.0
    w_mdms: float = 1.0
    weight: float = 0.1  # w_hyper
    adaptive: bool = True
    adaptive_max: float = 1e8
    adaptive_every: int = 1  # recompute the adaptive weight every k steps (reuse in between)
    toy: ToyVFMSection = field(default_factory=ToyVFMSection)
    # how images reach a timm foundation model: "normalized" (bicubic antialiased resize, then the model's
    # mean/std) or "official" (the hustvl code: the [-1, 1] images, bilinear resize without antialias)
    preprocess: str = "normalized"


@dataclass
class TrainConfig:
    """Optimisation schedule shared by the training stages."""

    steps: int = 1000
    batch_size: int = 64  # global batch; split evenly over ranks
    micro_batch: int = 0  # per-rank forward/backward size; smaller than batch/ranks -> gradient accumulation (DiT)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam" or "adamw"
    lr_schedule: str = "constant"  # "constant" or "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 disables clipping
    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (GPU only)
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: evaluate only at the end
    eval_images: int = 500
    progress: bool = True
    compile: bool = False  # torch.compile the model's forward (GPU; 2.6x for LightningDiT-XL/1 on an H100)


@dataclass
class ProbeConfig:
    """Cheap generation-quality proxies logged while a tokenizer trains (vavae_lab.probe)."""

    every: int = 0  # run the probe every k tokenizer steps (and at the end); 0 = off
    images: int = 2000  # training images encoded for the probe
    dit_size: str = "toy-XS/1"
    dit_steps: int = 200
    dit_batch: int = 64
    samples: int = 500
    sample_steps: int = 10
    uniformity_n: int = 2000
    uniformity_runs: int = 1


@dataclass
class TokenizerConfig:
    """Everything that defines one tokenizer run."""

    model: VAEConfig = field(default_factory=VAEConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    vf: VFConfig = field(default_factory=VFConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # start from earlier weights (a stage chain): a preset name (its tokenizer stage trained with this run's
    # other settings, see presets.previous_stage) or a tokenizer run folder (a path with a "/"); None: random
    init_from: Optional[str] = None


@dataclass
class MetricsConfig:
    """How reconstructions and samples are scored."""

    fid_extractor: str = "toy"  # "toy" (trained here) or "inception" (torch-fidelity)
    inception_path: Optional[str] = None  # local torch-fidelity Inception weights
    num_images: int = 2000
    toy: ToyFeatureSection = field(default_factory=ToyFeatureSection)


@dataclass
class LatentsConfig:
    """How the latent cache is extracted (docs/paper.md §5: with and without flip, stats on ~10k latents)."""

    flip: bool = True  # also store the horizontally flipped image's latent
    sample_posterior: bool = False  # False: the posterior mean (mode); True: a sample
    shard_size: int = 10000
    stats_count: int = 10000
    batch_size: int = 256


@dataclass
class DiTModelConfig:
    """LightningDiT architecture: a registry size plus the switches of Table 1."""

    size: str = "XL/1"  # see vavae_lab.diffusion.lightningdit.DIT_SIZES
    mlp: str = "swiglu"  # "swiglu" or "gelu"
    norm: str = "rmsnorm"  # "rmsnorm" or "layernorm"
    pos: str = "rope"  # "rope" (2-D) or "abs" (sin-cos absolute)
    qk_norm: bool = False
    adaln_shift: bool = True  # False: the "without shift" adaLN variant
    class_dropout: float = 0.1
    mlp_ratio: float = 4.0


@dataclass
class TransportConfig:
    """Training path: rectified flow (LightningDiT) or the DDPM epsilon baseline of the original DiT."""

    path: str = "rectified_flow"  # "rectified_flow" or "ddpm"
    t_sampling: str = "logit_normal"  # "uniform" or "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    cos_weight: float = 1.0  # velocity-direction (cosine) loss weight; 0 disables it
    ddpm_steps: int = 1000


@dataclass
class RepaConfig:
    """REPA (Yu et al. 2024): align the DiT's tokens after block `depth` to a VFM's patch features; weight 0 is off."""

    weight: float = 0.0  # lambda; REPA uses 0.5 (train.py --proj-coeff)
    depth: int = 8  # 1-based block whose output is projected; REPA: 8 for SiT-L/XL, 4 for SiT-B
    projector_dim: int = 2048  # width of the projector MLP (models/sit.py projector_dim)
    foundation: str = "dinov2_vitb14"  # the VFM whose patch features are the target; "toy" offline
    pretrained_path: Optional[str] = None  # the VFM's weights file (as tokenizer.vf.pretrained_path)


@dataclass
class DiTConfig:
    """Everything that defines one LightningDiT run."""

    model: DiTModelConfig = field(default_factory=DiTModelConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    repa: RepaConfig = field(default_factory=RepaConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=80_000, batch_size=1024, lr=2e-4, betas=(0.9, 0.95), optimizer="adamw", precision="bf16",
        grad_clip=1.0, ckpt_every=5000, log_every=100, compile=True))
    ema_decay: float = 0.9999
    # the DiT's own seed (initial weights, noise, batch order), to repeat a DiT on the same latents; None: the
    # run's top-level `seed`, which also retrains the tokenizer
    seed: Optional[int] = None
    # steps before the last at which the EMA weights are kept (run/snapshots/step_*.pt) for a convergence curve;
    # they change no result, so no cache key holds them (keys.IGNORED)
    snapshots: tuple[int, ...] = ()


@dataclass
class SampleConfig:
    """ODE sampling and classifier-free guidance (docs/paper.md §5)."""

    sampler: str = "euler"  # one of SAMPLERS: "euler", "heun", "dopri5" (torchdiffeq) or "ddpm" (DDPM baseline)
    steps: int = 250
    cfg_scale: float = 1.0  # 1.0: no guidance
    cfg_interval_start: float = 0.0  # guide only while t >= this (t = 1 is data); paper 0.11
    cfg_channels: int = 0  # guide only the first k latent channels (official quirk: 3); 0 = all
    timestep_shift: float = 1.0  # s in t' = s t / (1 + (s - 1) t); paper 0.3; 1.0 = no shift
    atol: float = 1e-6
    rtol: float = 1e-3
    max_nfe: int = 1000  # dopri5 only: model evaluations per batch before it gives up (a barely trained DiT)
    num_samples: int = 2000
    batch_size: int = 250
    use_ema: bool = True
    seed: int = 0


@dataclass
class Config:
    """The full configuration of an experiment."""

    name: str = "custom"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    latents: LatentsConfig = field(default_factory=LatentsConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


# ----------------------------------------------------------------------------- public API


def to_dict(config) -> dict:
    """A plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def from_dict(data: dict) -> Config:
    """Build a Config from a nested dict; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    return validate(typed_from_dict(Config, data))


def apply_overrides(config: Config, overrides: list[str] | dict | None) -> Config:
    """Return a copy of `config` with `key.sub=value` overrides applied and type-checked."""
    if not overrides:
        return config
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of key.sub=value strings, e.g. [{overrides!r}], not one string")
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item or not item.split("=", 1)[0].strip():
                from .presets import PRESETS

                hint = f"; a preset goes after --preset: --preset {item}" if item in PRESETS else ""
                raise ConfigError(f"override {item!r} must look like key.sub=value{hint}")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {item!r}: {raw!r} is not a value ({str(exc).splitlines()[0]}); "
                                  "write a list as [1, 2] and quote text with spaces") from exc
            items.append((key.strip(), value))
    data = to_dict(config)
    for key, value in items:
        node, parts = data, key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise unknown_key(key, Config)
            if i < len(parts) - 1:
                node = node[part]
        if isinstance(node[parts[-1]], dict):
            raise ConfigError(f"{key} is a section; set one of its fields, e.g. {key}.{next(iter(node[parts[-1]]))}=...")
        node[parts[-1]] = value
    return from_dict(data)


def as_overrides(config: Config, section: str) -> list[str]:
    """Every field of one section as `section.key=value` overrides, e.g. to train one preset's DiT in another."""
    def walk(prefix: str, node) -> list[str]:
        if not isinstance(node, dict):
            return [f"{prefix}={json.dumps(node)}"]  # JSON values are valid YAML
        return [item for key, value in node.items() for item in walk(f"{prefix}.{key}", value)]

    return walk(section, to_dict(getattr(config, section)))


def save_config(config: Config, path: str | Path) -> None:
    """Write the full config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def load_config(source: str | Path, overrides: list[str] | dict | None = None) -> Config:
    """Load a preset name or a YAML file, then apply overrides."""
    from .presets import PRESETS, get_preset, preset_hint

    text = str(source)
    if text in PRESETS:
        config = get_preset(text)
    else:
        path = Path(text)
        if not text.strip() or path.is_dir():
            where = f"; a run folder keeps its config in {path / 'config.yaml'}" if text.strip() else ""
            raise ConfigError(f"{text!r} is neither a preset nor a YAML file{where}; presets: {', '.join(PRESETS)}")
        if not path.exists():
            raise ConfigError(f"{text!r} is neither a preset nor a YAML file; {preset_hint(text)}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path} holds a {type(data).__name__}, not a config: a YAML mapping of sections "
                              "(data:, tokenizer:, dit:, ...), as show-config prints one")
        config = from_dict(data or {})
    return validate(apply_overrides(config, overrides))
