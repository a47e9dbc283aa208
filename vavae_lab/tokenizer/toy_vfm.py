"""A toy vision foundation model: a small CNN pretrained here on the shapes dataset, cached by its config."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, is_dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import held
from ..device import one_thread
from ..checkpoint import atomic_save
from ..toy_recipes import ToyVFMSection
from ..data.images import from_uint8
from ..diffusion.lightningdit import count_parameters
from ..errors import CheckpointError, ConfigError
from ..paths import cache_dir, config_hash

OBJECTIVES = ("supervised", "masked")


@dataclass
class ToyVFMConfig(ToyVFMSection):
    """Architecture and pretraining recipe of the toy VFM; its hash keys the cache file.

    The recipe is `toy_recipes.ToyVFMSection` (the `tokenizer.vf.toy` section, declared once there); this adds what
    a run derives from its data and tokenizer and settings no preset changes.
    """

    weight_decay: float = 0.05
    resolution: int = 32
    grid: int = 8  # native feature grid; the feature stride is resolution / grid
    mask_ratio: float = 0.6  # masked objective: fraction of grid cells hidden from the input
    num_classes: int = 10
    shape_set: str = "classic"  # data.shape_set: the images it learns from

    def cache_key(self) -> str:
        """The hash naming the cached network: the full config, without `shape_set` at classic (keys made before it)."""
        return config_hash(self, unset={"shape_set": "classic"})


def coerce_toy_config(config=None) -> ToyVFMConfig:
    """A ToyVFMConfig from None (defaults), a ToyVFMConfig, a toy_recipes.ToyVFMSection (or another dataclass) or a dict."""
    if config is None:
        return ToyVFMConfig()
    if isinstance(config, str):
        raise ConfigError(f"toy VFM config {config!r}: pass a ToyVFMConfig, a toy_recipes.ToyVFMSection or a dict; a "
                          "preset's is build.toy_vfm_config(get_preset(name))")
    if isinstance(config, ToyVFMConfig):
        cfg = config
    else:
        values = asdict(config) if is_dataclass(config) else dict(config)
        known = {f.name for f in fields(ToyVFMConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown toy VFM config keys {unknown}; valid keys are {sorted(known)}")
        cfg = ToyVFMConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: ToyVFMConfig) -> None:
    """Raise ConfigError for settings the toy VFM cannot train with."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"toy VFM objective={cfg.objective!r}; use one of {OBJECTIVES}")
    if cfg.grid < 1 or cfg.resolution % cfg.grid or not _is_power_of_two(cfg.resolution // cfg.grid):
        raise ConfigError(f"toy VFM grid={cfg.grid} must divide resolution={cfg.resolution} by a power of two "
                          f"(e.g. grid 8 for 32 px: feature stride 4)")
    if not 0.0 < cfg.mask_ratio < 1.0:
        raise ConfigError(f"toy VFM mask_ratio={cfg.mask_ratio} must lie strictly between 0 and 1")
    for key in ("width", "feature_dim", "steps", "batch_size", "num_images", "num_classes"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"toy VFM {key}={getattr(cfg, key)} must be a positive integer")


def _is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n >= 1 and n & (n - 1) == 0


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups where the channel count allows it."""
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class _ResBlock(nn.Module):
    """Pre-norm residual block of two 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = _norm(channels), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        return x + self.conv2(F.gelu(self.norm2(h)))


class ToyVFM(nn.Module):
    """Small CNN: 3 x R x R images in [-1, 1] -> feature_dim x grid x grid features, plus training heads.

    A cheap stem reaches the feature grid, a residual stage works there, a 2x coarser context stage with
    twice the width adds global shape information, and is upsampled back and fused (a one-level U-Net).
    `history` holds the pretraining log once it was trained or loaded from the cache.
    """

    def __init__(self, config: ToyVFMConfig | None = None):
        super().__init__()
        cfg = coerce_toy_config(config)
        self.config = cfg
        self.stride = cfg.resolution // cfg.grid
        w, half = cfg.width, max(cfg.width // 2, 8)
        stem = [nn.Conv2d(3, half, 3, padding=1)]
        channels = half
        for i in range(int(math.log2(self.stride))):
            out = w if i == int(math.log2(self.stride)) - 1 else half
            stem += [nn.GELU(), nn.Conv2d(channels, out, 3, stride=2, padding=1)]
            channels = out
        if channels != w:
            stem += [nn.GELU(), nn.Conv2d(channels, w, 1)]
        self.stem = nn.Sequential(*stem)
        self.local = _ResBlock(w)
        self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.context = nn.Sequential(_ResBlock(2 * w), _ResBlock(2 * w))
        self.up = nn.Conv2d(2 * w, w, 1)
        self.fuse = _ResBlock(w)
        self.out = nn.Sequential(_norm(w), nn.GELU(), nn.Conv2d(w, cfg.feature_dim, 1))
        if cfg.objective == "supervised":
            self.cls_head = nn.Linear(cfg.feature_dim, cfg.num_classes)
            self.seg_head = nn.Conv2d(cfg.feature_dim, cfg.num_classes + 1, 1)  # last channel: background
        else:
            self.decoder = nn.Sequential(nn.Conv2d(cfg.feature_dim, w, 3, padding=1), nn.GELU(),
                                         nn.Conv2d(w, 3 * self.stride ** 2, 1), nn.PixelShuffle(self.stride))
        self.history: dict = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map B x feature_dim x grid x grid of images B x 3 x R x R in [-1, 1]."""
        h = self.local(self.stem(x))
        c = self.context(self.down(h))
        h = h + self.up(F.interpolate(c, size=h.shape[-2:], mode="nearest"))
        return self.out(self.fuse(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as `features`."""
        return self.features(x)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Class logits from globally pooled features (supervised objective)."""
        return self.cls_head(feats.mean(dim=(2, 3)))

    def reconstruct(self, feats: torch.Tensor) -> torch.Tensor:
        """Predicted pixels B x 3 x R x R from the feature map (masked objective)."""
        return self.decoder(feats)


def _augment(x: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, max_shift: int = 2):
    """Random horizontal flips and integer translations (up to max_shift px, border padding), images and masks alike."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen, device=gen.device) < 0.5
    shift = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=gen, device=gen.device).float()
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0).to(x.device)
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = (2.0 * shift[:, 0] / w).to(x.device)
    theta[:, 1, 2] = (2.0 * shift[:, 1] / h).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)
    m = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    return x, m[:, 0]


def cell_targets(masks: torch.Tensor, labels: torch.Tensor, stride: int, num_classes: int) -> torch.Tensor:
    """Soft per-cell segmentation targets B x (C+1) x g x g: foreground fraction on the class, the rest on background."""
    frac = F.avg_pool2d(masks[:, None].float(), stride)[:, 0]
    target = torch.zeros(frac.shape[0], num_classes + 1, *frac.shape[1:], device=frac.device)
    target[torch.arange(frac.shape[0]), labels] = frac
    target[:, num_classes] = 1.0 - frac
    return target


def random_cell_mask(batch: int, grid: int, ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Boolean B x g x g masks with exactly round(ratio * g * g) hidden cells per image (at least one)."""
    hidden = max(1, round(ratio * grid * grid))
    order = torch.rand(batch, grid * grid, generator=gen, device=gen.device).argsort(dim=1)
    return (order < hidden).view(batch, grid, grid)


def masked_loss(model: ToyVFM, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """MSE between the reconstruction and the input over hidden pixels only; hidden cells are zeroed in the input."""
    pix = cells[:, None].float().repeat_interleave(model.stride, 2).repeat_interleave(model.stride, 3)
    pred = model.reconstruct(model.features(x * (1.0 - pix)))
    return ((pred - x) ** 2 * pix).sum() / (pix.sum() * 3)


def _shapes(cfg: ToyVFMConfig, num_images: int, split: str):
    """The embedded shapes dataset for this config (imported lazily)."""
    from ..data.shapes import ShapesDataset
    return ShapesDataset(num_images, resolution=cfg.resolution, seed=cfg.seed, split=split,
                         num_classes=cfg.num_classes, shape_set=cfg.shape_set)


def random_toy_vfm(config=None) -> ToyVFM:
    """The toy architecture with random weights drawn from the config's seed (the random-network control)."""
    cfg = coerce_toy_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return ToyVFM(cfg)


@torch.enable_grad()
def pretrain_toy_vfm(config=None, *, device="cpu", progress: bool = True):
    """Pretrain a toy VFM with AdamW (warmup + cosine) on the shapes dataset; returns (model, history)."""
    cfg = coerce_toy_config(config)
    device = torch.device(device)
    start = time.perf_counter()
    data = _shapes(cfg, cfg.num_images, "train")
    images, labels, masks = data.images.to(device), data.labels.to(device), data.masks.to(device)
    model = random_toy_vfm(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, min(50, cfg.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.55 + 0.45 * math.cos(math.pi * min(1.0, s / cfg.steps))))
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    losses = []
    bar = tqdm(range(cfg.steps), desc=f"toy VFM ({cfg.objective})", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(labels), (cfg.batch_size,), generator=gen, device=device)
        x, m = _augment(from_uint8(images[idx]), masks[idx], gen)
        if cfg.objective == "supervised":
            feats = model.features(x)
            seg_target = cell_targets(m, labels[idx], model.stride, cfg.num_classes)
            loss = F.cross_entropy(model.classify(feats), labels[idx]) + \
                F.cross_entropy(model.seg_head(feats), seg_target)
        else:
            loss = masked_loss(model, x, random_cell_mask(len(idx), cfg.grid, cfg.mask_ratio, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 5))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    train_seconds = time.perf_counter() - start
    model.eval()
    history = {"loss": losses, "train_seconds": round(train_seconds, 2), "params": count_parameters(model)}
    history.update(evaluate_toy_vfm(model, device=device))
    model.history = history
    return model, history


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, *, ridge: float = 1e-2) -> float:
    """Test accuracy of a closed-form ridge-regression classifier (one-hot targets) on standardised features."""
    mean, std = train_x.double().mean(0), train_x.double().std(0) + 1e-6
    xs = F.pad((train_x.double() - mean) / std, (0, 1), value=1.0)
    xt = F.pad((test_x.double() - mean) / std, (0, 1), value=1.0)
    targets = F.one_hot(train_y, num_classes).double()
    gram = xs.T @ xs + ridge * len(xs) * torch.eye(xs.shape[1], dtype=torch.float64)
    weights = torch.linalg.solve(gram, xs.T @ targets)
    return (xt @ weights).argmax(1).eq(test_y).double().mean().item()


@torch.no_grad()
def evaluate_toy_vfm(model: ToyVFM, *, num_train: int = 2000, num_test: int = 1000, device="cpu",
                     batch_size: int = 500) -> dict:
    """Test metrics: linear-probe accuracy on pooled features, plus head accuracy or masked loss on the test split."""
    cfg, device = model.config, torch.device(device)
    was_training = model.training
    model.eval()
    pooled, out = {}, {}
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    head_correct, masked_sum = 0, 0.0
    for split, n in (("train", num_train), ("test", num_test)):
        data = _shapes(cfg, n, split)
        chunks = []
        for lo in range(0, n, batch_size):
            x = from_uint8(data.images[lo:lo + batch_size]).to(device)
            feats = model.features(x)
            chunks.append(feats.mean(dim=(2, 3)).cpu())
            if split == "test" and cfg.objective == "supervised":
                head_correct += (model.classify(feats).argmax(1).cpu() == data.labels[lo:lo + batch_size]).sum().item()
            elif split == "test":
                cells = random_cell_mask(len(x), cfg.grid, cfg.mask_ratio, gen)
                masked_sum += masked_loss(model, x, cells).item() * len(x)
        pooled[split] = (torch.cat(chunks), data.labels)
    out["probe_accuracy"] = round(linear_probe(*pooled["train"], *pooled["test"], cfg.num_classes), 4)
    if cfg.objective == "supervised":
        out["test_accuracy"] = round(head_correct / num_test, 4)
    else:
        out["test_masked_loss"] = round(masked_sum / num_test, 5)
    model.train(was_training)
    return out


def toy_vfm_cache_path(config=None):
    """Where the pretrained toy VFM for this config is (or will be) cached."""
    return cache_dir("toy_vfm") / f"{coerce_toy_config(config).cache_key()}.pt"


def get_toy_vfm(config=None, *, device="cpu", progress: bool = True) -> ToyVFM:
    """The pretrained toy VFM for this config: loaded from the cache if present, else pretrained and cached."""
    cfg = coerce_toy_config(config)
    path = toy_vfm_cache_path(cfg)
    with held(path):  # parallel jobs pretrain it once, on one thread whoever trains it (device.one_thread)
        if not path.exists():
            with one_thread():
                model, history = pretrain_toy_vfm(cfg, device=device, progress=progress)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            atomic_save({"config": asdict(cfg), "state_dict": state, "history": history}, path)
            return model.eval()
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = ToyVFM(cfg)
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"cached toy VFM {path} is unreadable or does not match its config "
                              f"({type(exc).__name__}: {exc}); delete the file to pretrain again") from exc
    model.history = blob["history"]
    return model.to(device).eval()
