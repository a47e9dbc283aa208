"""What `train_tokenizer` needs from a Config: the training data and the parts of the tokenizer run.

The models, losses and feature networks are built beside what they build (tokenizer/build.py,
diffusion/build.py, metrics/build.py); this module only assembles them for the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..config import Config
from ..data import ShapesDataset, build_dataset, train_dataset
from ..errors import ConfigError
from ..tokenizer.build import build_autoencoder, build_loss, build_vfm
from .common import StepBatches


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
        from ..metrics.build import toy_feature_config

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
