"""Every string option of a config, listed once: the config's gate (`config_rules.RULES`) and the modules read these."""
from __future__ import annotations

SOURCES: tuple[str, ...] = ("shapes", "imagefolder")  # data.source
SHAPE_SETS: tuple[str, ...] = ("classic", "outline")  # data.shape_set: the shapes' classes (data/shapes.SET_CLASSES)
CROPS: tuple[str, ...] = ("center", "random")  # data.crop: ADM's centre crop, or the official training's random one
PREPROCESS: tuple[str, ...] = ("normalized", "official")  # tokenizer.vf.preprocess: the VFM's input
# tokenizer.vf.projection: "reverse" maps the latent up to the VFM's width (the paper's), "forward" the VFM's down
PROJECTIONS: tuple[str, ...] = ("reverse", "forward")
DISC_LOSSES: tuple[str, ...] = ("hinge", "vanilla")  # tokenizer.loss.disc_loss
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")  # *.train.optimizer
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")  # *.train.lr_schedule
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")  # *.train.precision
MLP_KINDS: tuple[str, ...] = ("swiglu", "gelu")  # dit.model.mlp
NORM_KINDS: tuple[str, ...] = ("rmsnorm", "layernorm")  # dit.model.norm
POS_KINDS: tuple[str, ...] = ("rope", "abs")  # dit.model.pos: 2-D RoPE or sin-cos absolute
PATHS: tuple[str, ...] = ("rectified_flow", "ddpm")  # dit.transport.path
T_SAMPLINGS: tuple[str, ...] = ("logit_normal", "uniform")  # dit.transport.t_sampling
# sample.sampler: diffusion.samplers.sample_ode integrates the ODE_SAMPLERS; "ddpm" is the DDPM/DDIM sampler of a
# DiT trained with dit.transport.path=ddpm
ODE_SAMPLERS: tuple[str, ...] = ("euler", "heun", "dopri5")
SAMPLERS: tuple[str, ...] = (*ODE_SAMPLERS, "ddpm")
# metrics.toy.version: 1 the shape classifier, 2 one head per factor a person sees (docs/yardstick.md)
TOY_FEATURE_VERSIONS: tuple[int, ...] = (1, 2)
# dit.model.size: "<family>/<patch>"; each family's depth / width / heads is diffusion/lightningdit.py's (B, L, XL:
# DiT's; 1.0B, 1.6B: the larger official LightningDiTs; toy-*: a laptop CPU's), tests/test_lightningdit.py holds them equal
DIT_FAMILIES: tuple[str, ...] = ("toy-XS", "toy-S", "toy-M", "B", "L", "XL", "1.0B", "1.6B")
DIT_SIZES: tuple[str, ...] = tuple(f"{family}/{patch}" for family in DIT_FAMILIES for patch in (1, 2))
# device: "auto" (cuda, then mps, then cpu), a device type, or "cuda:<index>"
DEVICE_TYPES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
