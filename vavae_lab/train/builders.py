"""Build datasets, models, losses and evaluators from a Config (the only place config meets the modules)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..config import Config
from ..data import ShapesDataset, build_dataset
from ..errors import ConfigError
from .common import StepBatches


def build_train_eval_data(config: Config, eval_count: int):
    """The training dataset and a fixed tensor of held-out images in [-1, 1] for evaluation."""
    d = config.data
    if d.source == "imagefolder" and not d.root:
        raise ConfigError("data.source=imagefolder needs data.root=/path/to/imagenet/train "
                          "(a folder of class sub-folders)")
    train = build_dataset(d.source, root=d.root, resolution=d.resolution, num_images=d.num_train, seed=d.seed,
                          split="train", num_classes=d.num_classes, strict=d.strict)
    if isinstance(train, ShapesDataset):
        test = build_dataset("shapes", resolution=d.resolution, num_images=max(eval_count, 1), seed=d.seed,
                             split="test", num_classes=d.num_classes)
        eval_images = test.get_batch(torch.arange(min(eval_count, len(test))))[0]
    else:  # a fixed, seeded subset of the image folder (no held-out split in the ImageNet train layout)
        g = torch.Generator().manual_seed(d.seed)
        idx = torch.randperm(len(train), generator=g)[:eval_count].tolist()
        eval_images = torch.stack([train[i][0] for i in idx]) if idx else torch.empty(0, 3, d.resolution,
                                                                                       d.resolution)
    return train, eval_images


def toy_vfm_config(config: Config):
    """The toy foundation model's config, derived from the VF section and the data."""
    from ..tokenizer.toy_vfm import ToyVFMConfig

    t, f = config.tokenizer.vf.toy, 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    return ToyVFMConfig(objective=t.objective, width=t.width, feature_dim=t.feature_dim, steps=t.steps,
                        batch_size=t.batch_size, lr=t.lr, num_images=t.num_images,
                        resolution=config.data.resolution, seed=t.seed, grid=config.data.resolution // f)


def toy_feature_config(config: Config):
    """The toy FID feature network's config, derived from the metrics section and the data."""
    from ..metrics.toy_features import ToyFeatureConfig

    t = config.metrics.toy
    return ToyFeatureConfig(resolution=config.data.resolution, num_images=t.num_images, steps=t.steps,
                            batch_size=t.batch_size, lr=t.lr, seed=t.seed, width=t.width, feature_dim=t.feature_dim)


def build_autoencoder(config: Config):
    """The KL-VAE described by config.tokenizer.model at config.data.resolution."""
    from ..tokenizer.autoencoder import AutoencoderKL

    m = config.tokenizer.model
    return AutoencoderKL(ch=m.ch, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                         attn_resolutions=tuple(m.attn_resolutions), z_channels=m.z_channels,
                         embed_dim=m.embed_dim, resolution=config.data.resolution, dropout=m.dropout,
                         norm_groups=m.norm_groups)


def build_vfm(config: Config, device: torch.device):
    """The frozen vision foundation model of the VF loss, or None when VF is off."""
    from ..tokenizer.foundation import build_foundation_model

    vf = config.tokenizer.vf
    if not vf.enabled:
        return None
    f = 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    return build_foundation_model(vf.foundation, grid=config.data.resolution // f,
                                  pretrained_path=vf.pretrained_path, device=device,
                                  toy_config=toy_vfm_config(config) if vf.foundation.startswith("toy") else None)


def build_loss(config: Config, vfm_dim: int | None):
    """The tokenizer objective (NLL, KL, GAN and optionally VF) described by the config."""
    from ..tokenizer.losses import TokenizerLoss, build_lpips
    from ..tokenizer.vf_loss import VFLoss

    lc, vf, m = config.tokenizer.loss, config.tokenizer.vf, config.tokenizer.model
    lpips = build_lpips(lc.lpips_path) if lc.perceptual_weight > 0 else None
    vf_loss = None
    if vf.enabled:
        vf_loss = VFLoss(m.embed_dim, vfm_dim, projection=vf.projection, use_mcos=vf.use_mcos,
                         use_mdms=vf.use_mdms, m1=vf.m1, m2=vf.m2, w_mcos=vf.w_mcos, w_mdms=vf.w_mdms)
    return TokenizerLoss(disc_start=lc.disc_start, logvar_init=lc.logvar_init, kl_weight=lc.kl_weight,
                         pixel_weight=lc.pixel_weight, perceptual_weight=lc.perceptual_weight, lpips=lpips,
                         disc_ndf=lc.disc_ndf, disc_layers=lc.disc_layers, disc_factor=lc.disc_factor,
                         disc_weight=lc.disc_weight, disc_loss=lc.disc_loss, vf_loss=vf_loss, vf_weight=vf.weight,
                         vf_adaptive=vf.adaptive, vf_adaptive_max=vf.adaptive_max,
                         vf_adaptive_every=vf.adaptive_every)


@dataclass
class TokenizerParts:
    """The model, its objective, the frozen VFM, a batch iterator factory and an evaluator."""

    model: torch.nn.Module
    loss: torch.nn.Module
    vfm: torch.nn.Module | None
    make_loader: Callable[..., Iterator[torch.Tensor]]
    evaluate: Callable[[torch.nn.Module, torch.Tensor], dict]


def build_tokenizer_parts(config: Config, device: torch.device) -> TokenizerParts:
    """Everything `train_tokenizer` needs, on `device`."""
    with torch.random.fork_rng(devices=[]):  # pretraining a toy VFM must not shift the model's init
        vfm = build_vfm(config, device)
    model = build_autoencoder(config).to(device)
    loss = build_loss(config, vfm.dim if vfm is not None else None).to(device)

    def make_loader(dataset, batches: StepBatches, start: int, end: int) -> Iterator[torch.Tensor]:
        if isinstance(dataset, ShapesDataset):  # in memory: index tensors directly
            return (dataset.get_batch(*batches.indices(s))[0] for s in range(start, end))
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches.sampler(start, end),
                                             num_workers=config.data.num_workers,
                                             pin_memory=device.type == "cuda",
                                             persistent_workers=False)
        return (images for images, _ in loader)

    def evaluate(net: torch.nn.Module, images: torch.Tensor) -> dict:
        from ..metrics import reconstruction_metrics

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
