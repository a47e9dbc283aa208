"""Build the DiT stage's parts from a Config: the LightningDiT for a latent shape, and its training path."""
from __future__ import annotations

from ..config import Config


def build_dit_for(config: Config, latent_shape, num_classes: int):
    """The LightningDiT of config.dit.model for latents of shape (C, h, w) and `num_classes` classes."""
    from .lightningdit import build_dit

    m = config.dit.model
    c, h, w = latent_shape
    return build_dit(m.size, input_size=h, in_channels=c, num_classes=num_classes, mlp=m.mlp, norm=m.norm,
                     pos=m.pos, qk_norm=m.qk_norm, adaln_shift=m.adaln_shift, class_dropout=m.class_dropout,
                     mlp_ratio=m.mlp_ratio)


def build_transport_for(config: Config):
    """The training path (rectified flow or DDPM) of config.dit.transport."""
    from .transport import build_transport

    t = config.dit.transport
    if t.path == "ddpm":
        return build_transport("ddpm", num_steps=t.ddpm_steps)
    return build_transport(t.path, t_sampling=t.t_sampling, logit_mean=t.logit_mean, logit_std=t.logit_std,
                           cos_weight=t.cos_weight)
