"""A small classifier trained on the embedded shapes data whose penultimate features stand in for Inception."""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import atomic_write, held
from ..device import one_thread
from ..choices import TOY_FEATURE_VERSIONS
from ..toy_recipes import ToyFeatureSection
from ..data.images import from_uint8
from ..diffusion.lightningdit import count_parameters
from ..errors import CheckpointError, ConfigError
from ..paths import cache_dir, config_hash
from .toy_factors import degrade

CACHE_NAME = "fid_features"


@dataclass
class ToyFeatureConfig(ToyFeatureSection):
    """How the toy FID feature network is built and pretrained; its hash keys the cache file.

    The recipe is `toy_recipes.ToyFeatureSection` (the `metrics.toy` section, declared once there, lab defaults);
    this adds the resolution a run derives from its data and settings no preset changes.
    """

    resolution: int = 32  # input size the network is trained at; other sizes are resized to it
    num_test_images: int = 2000  # shapes test split, for the reported accuracy
    num_classes: int = 10
    weight_decay: float = 1e-4
    shape_set: str = "classic"  # data.shape_set: the classes it tells apart

    def __post_init__(self):
        """Reject settings that cannot build or train the network."""
        for name in ("resolution", "num_images", "num_test_images", "steps", "batch_size", "width",
                     "feature_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ToyFeatureConfig.{name}={getattr(self, name)} must be >= 1")
        if self.num_classes < 2:
            raise ConfigError(f"ToyFeatureConfig.num_classes={self.num_classes} must be >= 2")
        if self.resolution < 8:
            raise ConfigError(f"ToyFeatureConfig.resolution={self.resolution} must be >= 8 (three stride-2 stages)")
        if self.lr <= 0:
            raise ConfigError(f"ToyFeatureConfig.lr={self.lr} must be positive")
        if self.version not in TOY_FEATURE_VERSIONS:
            raise ConfigError(f"ToyFeatureConfig.version={self.version!r} must be one of {TOY_FEATURE_VERSIONS} "
                              "(1: the shape classifier, 2: one head per visible factor)")

    def cache_key(self) -> str:
        """The hash naming the cached network: the full config, without `version` at 1 and `shape_set` at classic
        (keys made before them)."""
        return config_hash(self, unset={"version": 1, "shape_set": "classic"})

    @classmethod
    def from_dict(cls, values: dict) -> "ToyFeatureConfig":
        """Build a config from a dict such as `asdict(config)`, rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown ToyFeatureConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**values)


class _ConvBNAct(nn.Sequential):
    """3x3 convolution, batch norm and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    """x + ConvBNAct(x): a residual layer that keeps the channel count and resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = _ConvBNAct(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ToyFeatureNet(nn.Module):
    """A ResNet-style network for 3 x R x R images in [-1, 1] with three stride-2 stages (R -> R/8).

    Version 1 pools the last map and classifies the shape; its FID features are the hidden layer. Version 2
    keeps the map's layout (flattened, so position survives), adds a regression head for every factor of
    `toy_factors.FACTORS`, and its FID features are the heads' outputs in units of each one's spread: the
    standardised factors and the class logits divided by their spread on real images (docs/yardstick.md).
    """

    def __init__(self, config: ToyFeatureConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.trunk = nn.Sequential(
            _ConvBNAct(3, w, stride=2), _Residual(w),
            _ConvBNAct(w, 2 * w, stride=2), _Residual(2 * w),
            _ConvBNAct(2 * w, 4 * w, stride=2), _Residual(4 * w),
        )
        side = -(-config.resolution // 8)  # the last map's side: three stride-2 convolutions with padding 1
        self.project = nn.Linear(4 * w * (side * side if config.version == 2 else 1), config.feature_dim)
        self.classifier = nn.Linear(config.feature_dim, config.num_classes)
        if config.version == 2:
            from .toy_factors import num_targets

            self.regressor = nn.Linear(config.feature_dim, num_targets(config.shape_set))
            # the class logits' mean and spread on real training images (set after training)
            self.register_buffer("logit_mean", torch.zeros(config.num_classes))
            self.register_buffer("logit_std", torch.ones(config.num_classes))
        self.test_accuracy: float | None = None
        self.train_seconds: float | None = None

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize inputs of another size to the training resolution (bilinear, antialiased)."""
        size = self.config.resolution
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The layer before the heads (B x feature_dim): the trunk pooled (v1) or flattened (v2), projected, ReLU."""
        h = self.trunk(self._prepare(x))
        h = h.flatten(1) if self.config.version == 2 else h.mean(dim=(2, 3))
        return F.relu(self.project(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B x num_classes)."""
        return self.classifier(self.hidden(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass: (the FID features, the class logits)."""
        h = self.hidden(x)
        logits = self.classifier(h)
        if self.config.version == 1:
            return h, logits
        return torch.cat([self.regressor(h), (logits - self.logit_mean) / self.logit_std], 1), logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The FID features: the hidden layer (v1), or the factors and scaled logits (v2)."""
        return self.features_and_logits(x)[0]


def _datasets(config: ToyFeatureConfig):
    """The shapes train and test splits the network learns from and is scored on."""
    from ..data.shapes import ShapesDataset

    train = ShapesDataset(config.num_images, resolution=config.resolution, seed=config.seed, split="train",
                          num_classes=config.num_classes, shape_set=config.shape_set)
    test = ShapesDataset(config.num_test_images, resolution=config.resolution, seed=config.seed, split="test",
                         num_classes=config.num_classes, shape_set=config.shape_set)
    return train, test


class _FactorLoss:
    """Mean squared error of the factor head on standardised targets, where each factor is visible (v2)."""

    def __init__(self, train):
        from .toy_factors import factor_targets, quality_stats

        targets, self.mask = factor_targets(train.factors(), train.shape_set)
        count = self.mask.sum(0).clamp(min=1)
        mean = (targets * self.mask).sum(0) / count
        std = (((targets - mean) ** 2 * self.mask).sum(0) / count).sqrt().clamp(min=1e-6)
        self.targets = (targets - mean) / std * self.mask
        self.quality_mean, self.quality_std = quality_stats()

    def __call__(self, predicted: torch.Tensor, idx: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """The masked MSE of a batch's predictions against the standardised targets of images `idx`."""
        quality = (quality - self.quality_mean) / self.quality_std
        target = torch.cat([self.targets[idx], quality], 1).to(predicted.device)
        mask = torch.cat([self.mask[idx], torch.ones_like(quality)], 1).to(predicted.device)
        return (((predicted - target) * mask) ** 2).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def predict_classes(net: ToyFeatureNet, images_uint8: torch.Tensor, *, device="cpu", batch_size: int = 500) -> torch.Tensor:
    """The class the network names for each uint8 image (N x 3 x H x W), on the CPU."""
    was_training = net.training
    net.eval()
    pred = [net(from_uint8(images_uint8[start:start + batch_size].to(device))).argmax(dim=1).cpu()
            for start in range(0, len(images_uint8), batch_size)]
    net.train(was_training)
    return torch.cat(pred) if pred else torch.zeros(0, dtype=torch.long)


def evaluate_accuracy(net: ToyFeatureNet, images_uint8: torch.Tensor, labels: torch.Tensor, *,
                      device="cpu", batch_size: int = 500) -> float:
    """Top-1 accuracy of the network on uint8 images (N x 3 x H x W) with integer labels."""
    pred = predict_classes(net, images_uint8, device=device, batch_size=batch_size)
    return int((pred == torch.as_tensor(labels).cpu()).sum()) / max(len(images_uint8), 1)


def accuracy_by_class(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    """For each class, the share of its images named as it (None for a class with no images)."""
    predicted, labels = torch.as_tensor(predicted), torch.as_tensor(labels)
    out = []
    for k in range(num_classes):
        mine = labels == k
        out.append(float((predicted[mine] == k).float().mean()) if mine.any() else None)
    return out


@torch.enable_grad()
def train_toy_feature_net(config: ToyFeatureConfig, *, device="cpu", progress: bool = True) -> ToyFeatureNet:
    """Train a fresh network on the shapes train split (AdamW, cosine LR, flips) and score it on the test split."""
    device = torch.device(device)
    started = time.perf_counter()
    train, test = _datasets(config)
    torch.manual_seed(config.seed)
    net = ToyFeatureNet(config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 20)

    def lr_factor(step: int) -> float:
        """Linear warm-up over the first 5% of steps, then a cosine decay to zero."""
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    factor_loss = _FactorLoss(train) if config.version == 2 else None
    net.train()
    bar = tqdm(range(config.steps), desc="toy FID features", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(len(train), (config.batch_size,), generator=generator)
        if factor_loss is None:  # v1: a classifier, trained with flips (its only target is flip-invariant)
            flips = torch.rand(config.batch_size, generator=generator) < 0.5
            x, y = train.get_batch(idx, flips=flips)
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
        else:  # v2: the class and every factor; no flips (they would move the position and rotation)
            x, y = train.get_batch(idx)
            x, quality = degrade(x, generator)  # blur and noise of known strength: the image-quality factors
            h = net.hidden(x.to(device))
            loss = F.cross_entropy(net.classifier(h), y.to(device)) + factor_loss(net.regressor(h), idx, quality)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    net.eval()
    if config.version == 2:
        with torch.no_grad():
            logits = torch.cat([net(from_uint8(train.images[i:i + 500]).to(device)).cpu()
                                for i in range(0, min(len(train), 5000), 500)])
        net.logit_mean.copy_(logits.mean(0))
        net.logit_std.copy_(logits.std(0).clamp(min=1e-6))
    net.test_accuracy = evaluate_accuracy(net, test.images, test.labels, device=device)
    net.train_seconds = time.perf_counter() - started
    return net


def toy_feature_cache_path(config: ToyFeatureConfig) -> Path:
    """Where the pretrained network for this config is cached (keyed by the hash of the full config)."""
    return cache_dir(CACHE_NAME) / f"{config.cache_key()}.pt"


def save_toy_feature_net(net: ToyFeatureNet, path: str | os.PathLike) -> None:
    """Write the weights, config, accuracy and training time to `path` atomically (temp file + rename)."""
    path = Path(path)
    payload = {
        "config": asdict(net.config),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "test_accuracy": float(net.test_accuracy) if net.test_accuracy is not None else -1.0,
        "train_seconds": float(net.train_seconds) if net.train_seconds is not None else -1.0,
        "num_params": count_parameters(net),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_toy_feature_net(path: str | os.PathLike, *, device="cpu") -> ToyFeatureNet:
    """Load a network written by `save_toy_feature_net`, in eval mode and frozen."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"toy feature network file {path} does not exist; build it with "
                              "get_toy_feature_net(config) or toy_feature_weights_path(config)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"could not read the toy feature network {path} ({exc}); delete the file "
                              "and it will be retrained") from exc
    if not isinstance(payload, dict) or not {"config", "state_dict"} <= set(payload):
        raise CheckpointError(f"{path} is not a toy feature network file (no 'config'/'state_dict' entries); "
                              "pass the path returned by toy_feature_weights_path(config)")
    net = ToyFeatureNet(ToyFeatureConfig.from_dict(payload["config"]))
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the ToyFeatureNet architecture of its own config; "
                              "delete the file and it will be retrained") from exc
    accuracy = float(payload.get("test_accuracy", -1.0))
    seconds = float(payload.get("train_seconds", -1.0))
    net.test_accuracy = accuracy if accuracy >= 0 else None
    net.train_seconds = seconds if seconds >= 0 else None
    net.requires_grad_(False)
    return net.eval().to(device)


def toy_feature_weights_path(config: ToyFeatureConfig | None = None, *, device="cpu",
                             progress: bool = True) -> Path:
    """The cached weights file for `config`, training and saving the network first when it is missing."""
    config = config or ToyFeatureConfig()
    path = toy_feature_cache_path(config)
    with held(path):  # parallel jobs train it once, on one thread whoever trains it (device.one_thread)
        if not path.is_file():
            with one_thread():
                net = train_toy_feature_net(config, device=device, progress=progress)
            save_toy_feature_net(net, path)
            if progress:
                print(f"toy FID feature net: {count_parameters(net):,} params, test accuracy "
                      f"{net.test_accuracy:.4f}, trained in {net.train_seconds:.1f} s -> {path}")
    return path


def get_toy_feature_net(config: ToyFeatureConfig | None = None, device="cpu", *,
                        progress: bool = True) -> ToyFeatureNet:
    """The pretrained toy feature network for `config`: loaded from the cache, or trained once and cached."""
    path = toy_feature_weights_path(config, device=device, progress=progress)
    return load_toy_feature_net(path, device=device)
