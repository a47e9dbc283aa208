"""Build the tokenizer's parts from a Config: the KL-VAE, the frozen foundation model, the objective."""
from __future__ import annotations

import torch

from ..config import Config


def toy_vfm_config(config: Config):
    """The toy foundation model's config, derived from the VF section and the data."""
    from .toy_vfm import ToyVFMConfig

    t, f = config.tokenizer.vf.toy, 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    return ToyVFMConfig(objective=t.objective, width=t.width, feature_dim=t.feature_dim, steps=t.steps,
                        batch_size=t.batch_size, lr=t.lr, num_images=t.num_images,
                        resolution=config.data.resolution, seed=t.seed, grid=config.data.resolution // f,
                        shape_set=config.data.shape_set)


def build_autoencoder(config: Config):
    """The KL-VAE described by config.tokenizer.model at config.data.resolution."""
    from .autoencoder import AutoencoderKL

    m = config.tokenizer.model
    return AutoencoderKL(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                         attn_resolutions=tuple(m.attn_resolutions), z_channels=m.z_channels,
                         embed_dim=m.embed_dim, resolution=config.data.resolution, dropout=m.dropout,
                         norm_groups=m.norm_groups)


def build_vfm(config: Config, device: torch.device):
    """The frozen vision foundation model of the VF loss, or None when VF is off."""
    from .foundation import build_foundation_model

    vf = config.tokenizer.vf
    if not vf.enabled:
        return None
    f = 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    return build_foundation_model(vf.foundation, grid=config.data.resolution // f,
                                  pretrained_path=vf.pretrained_path, device=device, preprocess=vf.preprocess,
                                  toy_config=toy_vfm_config(config) if vf.foundation.startswith("toy") else None)


def build_loss(config: Config, vfm_dim: int | None):
    """The tokenizer objective (NLL, KL, GAN and optionally VF) described by the config."""
    from .losses import TokenizerLoss, build_lpips
    from .vf_loss import VFLoss

    lc, vf, m = config.tokenizer.loss, config.tokenizer.vf, config.tokenizer.model
    lpips = build_lpips(lc.lpips_path) if lc.perceptual_weight > 0 else None
    colour = colour_matrix(config) if lc.colour_balance > 0 else None
    vf_loss = None
    if vf.enabled:
        vf_loss = VFLoss(m.embed_dim, vfm_dim, projection=vf.projection, use_mcos=vf.use_mcos,
                         use_mdms=vf.use_mdms, m1=vf.m1, m2=vf.m2, w_mcos=vf.w_mcos, w_mdms=vf.w_mdms)
    return TokenizerLoss(disc_start=lc.disc_start, logvar_init=lc.logvar_init, kl_weight=lc.kl_weight,
                         pixel_weight=lc.pixel_weight, perceptual_weight=lc.perceptual_weight, lpips=lpips,
                         disc_ndf=lc.disc_ndf, disc_layers=lc.disc_layers, disc_factor=lc.disc_factor,
                         disc_weight=lc.disc_weight, disc_loss=lc.disc_loss, vf_loss=vf_loss, vf_weight=vf.weight,
                         vf_adaptive=vf.adaptive, vf_adaptive_max=vf.adaptive_max,
                         vf_adaptive_every=vf.adaptive_every, colour_matrix=colour)


def colour_matrix(config: Config) -> torch.Tensor:
    """The colour-balance matrix of tokenizer.loss.colour_balance, measured on the first training images."""
    from ..data import train_dataset
    from .colour import COLOUR_SAMPLE, colour_balance_matrix

    d = config.data
    data = train_dataset(d, min(COLOUR_SAMPLE, d.num_train))
    n = min(COLOUR_SAMPLE, len(data))
    if hasattr(data, "get_batch"):  # generated in memory
        images = data.get_batch(torch.arange(n))[0]
    else:  # the first n files, centre-cropped (a fixed sample whatever the training crop)
        images = torch.stack([data[i][0] for i in range(n)])
    return colour_balance_matrix(images, config.tokenizer.loss.colour_balance)
