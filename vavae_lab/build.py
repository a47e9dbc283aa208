"""Where a Config becomes parts: the tokenizer, its VFM and objective, the DiT and its path, the toy networks, data.

Everything below this module (data/, tokenizer/, diffusion/, metrics/) takes modules, tensors and plain
numbers; this is the one place that reads a Config's sections into their constructors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset

from .config import Config
from .data import ShapesDataset, build_dataset
from .errors import ConfigError


def downsampling(config: Config) -> int:
    """The tokenizer's downsampling factor f: 2 per level of tokenizer.model.ch_mult after the first."""
    return 2 ** (len(config.tokenizer.model.ch_mult) - 1)


def compression(f: int, d: int) -> float:
    """How many times fewer numbers a latent of d channels at downsampling f holds than the RGB image:
    3 x H x W over d x H/f x W/f (the paper's f16d16 / d32 / d64: 48x / 24x / 12x)."""
    return 3 * f * f / d


def latent_name(config: Config) -> str:
    """The tokenizer's latent by f, d and compression, as the pack's manifest names it: "f8d16 (12x)"."""
    f, d = downsampling(config), config.tokenizer.model.embed_dim
    return f"f{f}d{d} ({compression(f, d):g}x)"


def toy_vfm_config(config: Config):
    """The toy foundation model's config, derived from the VF section and the data."""
    from .tokenizer.toy_vfm import ToyVFMConfig

    t = config.tokenizer.vf.toy
    return ToyVFMConfig(objective=t.objective, width=t.width, feature_dim=t.feature_dim, steps=t.steps,
                        batch_size=t.batch_size, lr=t.lr, num_images=t.num_images,
                        resolution=config.data.resolution, seed=t.seed,
                        grid=config.data.resolution // downsampling(config), shape_set=config.data.shape_set)


def toy_feature_config(config: Config):
    """The toy FID feature network's config, derived from the metrics section and the data."""
    from .metrics.toy_features import ToyFeatureConfig

    t = config.metrics.toy
    return ToyFeatureConfig(resolution=config.data.resolution, num_images=t.num_images, steps=t.steps,
                            batch_size=t.batch_size, lr=t.lr, seed=t.seed, width=t.width, feature_dim=t.feature_dim,
                            version=t.version, shape_set=config.data.shape_set)


def train_dataset(d, num_images: int | None = None, *, crop: str = "center") -> Dataset:
    """The training split config.data (`d`) names (`num_images` defaults to data.num_train; a generated dataset's
    first n images are the same whatever its length)."""
    return build_dataset(d.source, root=d.root, resolution=d.resolution,
                         num_images=d.num_train if num_images is None else num_images, seed=d.seed, split="train",
                         num_classes=d.num_classes, strict=d.strict, crop=crop, shape_set=d.shape_set)


def held_out_dataset(d, n: int) -> Dataset:
    """The first min(n, data.num_test) held-out images of the dataset a DataConfig (config.data) names."""
    return build_dataset(d.source, root=d.root, resolution=d.resolution, num_images=min(n, d.num_test), seed=d.seed,
                         split="test", num_classes=d.num_classes, shape_set=d.shape_set)


def shapes_reference(config: Config):
    """The shapes train split of config.data as the reference of FID (metrics.generation.ShapesReference)."""
    from .metrics.generation import ShapesReference

    d = config.data
    return ShapesReference(resolution=d.resolution, seed=d.seed, num_train=d.num_train, num_classes=d.num_classes,
                           shape_set=d.shape_set)


def sample_scoring(config: Config, reference=None) -> dict:
    """The keyword arguments of `metrics.evaluate_samples` for a run's config: its data as the reference (or
    `reference`: "shapes", a folder, an ADM .npz), the extractor a folder is scored with, and the toy network."""
    if reference is None:
        reference = "shapes" if config.data.source == "shapes" else config.data.root
    if isinstance(reference, str) and reference == "shapes":
        reference = shapes_reference(config)
    folder = isinstance(reference, (str, Path)) and not str(reference).endswith(".npz")
    return {"reference": reference, "extractor": config.metrics.fid_extractor if folder else None,
            "toy_config": toy_feature_config(config), "inception_path": config.metrics.inception_path}


def build_autoencoder(config: Config):
    """The KL-VAE described by config.tokenizer.model at config.data.resolution."""
    from .tokenizer.autoencoder import AutoencoderKL

    m = config.tokenizer.model
    return AutoencoderKL(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                         attn_resolutions=tuple(m.attn_resolutions), z_channels=m.z_channels,
                         embed_dim=m.embed_dim, resolution=config.data.resolution, dropout=m.dropout,
                         norm_groups=m.norm_groups)


def build_vfm(config: Config, device: torch.device):
    """The frozen vision foundation model of the VF loss, or None when VF is off."""
    from .tokenizer.foundation import build_foundation_model

    vf = config.tokenizer.vf
    if not vf.enabled:
        return None
    return build_foundation_model(vf.foundation, grid=config.data.resolution // downsampling(config),
                                  pretrained_path=vf.pretrained_path, device=device, preprocess=vf.preprocess,
                                  toy_config=toy_vfm_config(config) if vf.foundation.startswith("toy") else None)


def build_loss(config: Config, vfm_dim: int | None):
    """The tokenizer objective (NLL, KL, GAN and optionally VF) described by the config."""
    from .tokenizer.losses import TokenizerLoss, build_lpips
    from .tokenizer.vf_loss import VFLoss

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
    from .tokenizer.colour import COLOUR_SAMPLE, colour_balance_matrix

    d = config.data
    data = train_dataset(d, min(COLOUR_SAMPLE, d.num_train))
    n = min(COLOUR_SAMPLE, len(data))
    if hasattr(data, "get_batch"):  # generated in memory
        images = data.get_batch(torch.arange(n))[0]
    else:  # the first n files, centre-cropped (a fixed sample whatever the training crop)
        images = torch.stack([data[i][0] for i in range(n)])
    return colour_balance_matrix(images, config.tokenizer.loss.colour_balance)


def build_dit_for(config: Config, latent_shape, num_classes: int):
    """The LightningDiT of config.dit.model for latents of shape (C, h, w) and `num_classes` classes."""
    from .diffusion.lightningdit import build_dit

    m = config.dit.model
    c, h, w = latent_shape
    return build_dit(m.size, input_size=h, in_channels=c, num_classes=num_classes, mlp=m.mlp, norm=m.norm,
                     pos=m.pos, qk_norm=m.qk_norm, adaln_shift=m.adaln_shift, class_dropout=m.class_dropout,
                     mlp_ratio=m.mlp_ratio)


def token_grid(config: Config) -> int:
    """The side of the DiT's token grid: latent side / patch size (REPA's VFM features are taken on it)."""
    from .diffusion.lightningdit import DIT_SIZES

    return config.data.resolution // downsampling(config) // DIT_SIZES[config.dit.model.size]["patch_size"]


def build_repa_vfm(config: Config, device: torch.device):
    """The frozen VFM of config.dit.repa at the DiT's token grid (the toy VFM is the tokenizer's, tokenizer.vf.toy)."""
    from .tokenizer.foundation import build_foundation_model

    r = config.dit.repa
    return build_foundation_model(r.foundation, grid=token_grid(config), pretrained_path=r.pretrained_path,
                                  device=device, toy_config=toy_vfm_config(config) if r.foundation.startswith("toy")
                                  else None, section="dit.repa")


def check_repa(config: Config) -> None:
    """Raise ConfigError when dit.repa.depth names a block the DiT of dit.model.size does not have."""
    from .diffusion.lightningdit import DIT_SIZES

    r, size = config.dit.repa, config.dit.model.size
    blocks = DIT_SIZES[size]["depth"] if size in DIT_SIZES else None
    if blocks is not None and r.depth > blocks:
        raise ConfigError(f"dit.repa.depth={r.depth} but dit.model.size={size} has {blocks} blocks; "
                          f"set dit.repa.depth to 1..{blocks} (REPA aligns block 8 of SiT-XL's 28)")


def build_repa_for(config: Config, model, feature_dim: int):
    """The REPA term (projector, block, weight) of config.dit.repa for a built LightningDiT, or None when it is off."""
    from .diffusion.repa import Repa

    r = config.dit.repa
    if r.weight == 0:
        return None
    check_repa(config)
    return Repa(hidden_size=model.config["hidden_size"], feature_dim=feature_dim, depth=r.depth, weight=r.weight,
                projector_dim=r.projector_dim)


def build_transport_for(config: Config):
    """The training path (rectified flow or DDPM) of config.dit.transport."""
    from .diffusion.transport import build_transport

    t = config.dit.transport
    if t.path == "ddpm":
        return build_transport("ddpm", num_steps=t.ddpm_steps)
    return build_transport(t.path, t_sampling=t.t_sampling, logit_mean=t.logit_mean, logit_std=t.logit_std,
                           cos_weight=t.cos_weight)


def build_train_eval_data(config: Config, eval_count: int):
    """The training dataset and a fixed tensor of held-out images in [-1, 1] for evaluation."""
    d = config.data
    if d.source == "imagefolder" and not d.root:
        raise ConfigError("data.source=imagefolder needs data.root=/path/to/imagenet/train "
                          "(a folder of class sub-folders)")
    train = train_dataset(d, crop=d.crop)
    if isinstance(train, ShapesDataset):
        test = build_dataset("shapes", resolution=d.resolution, num_images=max(eval_count, 1), seed=d.seed,
                             split="test", num_classes=d.num_classes, shape_set=d.shape_set)
        eval_images = test.get_batch(torch.arange(min(eval_count, len(test))))[0]
    else:  # a fixed, seeded subset of the image folder (no held-out split in the ImageNet train layout)
        g = torch.Generator().manual_seed(d.seed)
        idx = torch.randperm(len(train), generator=g)[:eval_count].tolist()
        eval_images = torch.stack([train[i][0] for i in idx]) if idx else torch.empty(0, 3, d.resolution,
                                                                                       d.resolution)
    return train, eval_images


@dataclass
class TokenizerParts:
    """The model, its objective, the frozen VFM, a batch iterator factory and an evaluator."""

    model: torch.nn.Module
    loss: torch.nn.Module
    vfm: torch.nn.Module | None
    make_loader: Callable[..., Iterator[torch.Tensor]]
    evaluate: Callable[[torch.nn.Module, torch.Tensor], dict]


def build_tokenizer_parts(config: Config, device: torch.device) -> TokenizerParts:
    """Everything `train_tokenizer` needs, on `device`.

    `make_loader(dataset, batches, start, end)` takes a `train.common.StepBatches` (its `indices` and `sampler`).
    """
    with torch.random.fork_rng(devices=[]):  # pretraining a toy VFM must not shift the model's init
        vfm = build_vfm(config, device)
    model = build_autoencoder(config).to(device)
    loss = build_loss(config, vfm.dim if vfm is not None else None).to(device)

    def make_loader(dataset, batches, start: int, end: int) -> Iterator[torch.Tensor]:
        if isinstance(dataset, ShapesDataset):  # in memory: index tensors directly
            return (dataset.get_batch(*batches.indices(s))[0] for s in range(start, end))
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches.sampler(start, end),
                                             num_workers=config.data.num_workers,
                                             pin_memory=device.type == "cuda",
                                             persistent_workers=False)
        return (images for images, _ in loader)

    def evaluate(net: torch.nn.Module, images: torch.Tensor) -> dict:
        from .metrics import reconstruction_metrics

        if len(images) == 0:
            return {}
        was_training = net.training
        net.eval()
        with torch.random.fork_rng(devices=[]):
            out = reconstruction_metrics(net, images, device=device, fid_extractor=config.metrics.fid_extractor,
                                         toy_config=toy_feature_config(config),
                                         inception_path=config.metrics.inception_path,
                                         lpips=getattr(loss, "lpips", None),
                                         progress=config.tokenizer.train.progress)
        net.train(was_training)
        return out

    return TokenizerParts(model, loss, vfm, make_loader, evaluate)
