"""Frozen vision foundation models (timm ViTs such as DINOv2 and MAE, or the toy VFM) as patch-feature maps."""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..choices import PREPROCESS
from ..download import is_offline
from ..errors import CheckpointError, ConfigError, VavaeLabError, WeightsUnavailableError
from .toy_vfm import coerce_toy_config, get_toy_vfm, random_toy_vfm

VFM_REGISTRY: dict[str, dict] = {
    "dinov2_vits14": {"timm": "vit_small_patch14_dinov2.lvd142m", "patch_size": 14},
    "dinov2_vitb14": {"timm": "vit_base_patch14_dinov2.lvd142m", "patch_size": 14},
    "dinov2_vitl14": {"timm": "vit_large_patch14_dinov2.lvd142m", "patch_size": 14},
    "mae_vitl16": {"timm": "vit_large_patch16_224.mae", "patch_size": 16},
    "toy": {"toy": True, "pretrained": True},
    "toy_random": {"toy": True, "pretrained": False},
}

# How images in [-1, 1] reach a timm model: "normalized" (this project's default: bicubic antialiased resize,
# then the model's mean/std) or "official" (hustvl's vavae/ldm/models/foundation_models.py: the [-1, 1] images
# themselves, bilinear resize without antialias; the released VA-VAE was trained with it)

class FoundationModel(nn.Module):
    """A frozen VFM mapping images in [-1, 1] (B x 3 x H x W) to patch features B x dim x grid x grid.

    It stays in eval mode and without gradients even when a parent module calls .train(). Its weights are
    left out of state_dict() (they come back from the model name and weights file, or the toy cache), so
    checkpoints of modules that hold it stay small and still load with strict=True. `preprocess` (PREPROCESS)
    chooses how images are resized and normalised before a timm model sees them.
    """

    def __init__(self, net: nn.Module, *, name: str, grid: int, dim: int, input_size: int,
                 mean=None, std=None, num_prefix_tokens: int = 0, kind: str = "timm",
                 preprocess: str = "normalized"):
        super().__init__()
        if kind not in ("timm", "toy"):
            raise ConfigError(f"FoundationModel kind={kind!r}; use 'timm' or 'toy'")
        if preprocess not in PREPROCESS:
            raise ConfigError(f"tokenizer.vf.preprocess={preprocess!r}; use one of {', '.join(PREPROCESS)}")
        self.net, self.name, self.grid, self.dim, self.kind = net, name, grid, dim, kind
        self.preprocess = preprocess
        self.input_size, self.num_prefix_tokens = input_size, num_prefix_tokens
        mean = torch.zeros(3) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(3) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.net.requires_grad_(False)
        self.register_state_dict_post_hook(_drop_own_weights)
        self.register_load_state_dict_pre_hook(_fill_own_weights)
        self.train(False)

    def train(self, mode: bool = True) -> "FoundationModel":
        """Ignore `mode`: a foundation model is always in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features B x dim x grid x grid of images B x 3 x H x W in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ConfigError(f"foundation model {self.name!r} expects images B x 3 x H x W, got {tuple(images.shape)}")
        x = images.to(self.mean.dtype)
        official = self.preprocess == "official"
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear" if official else "bicubic",
                              align_corners=False, antialias=not official)
        if self.kind == "toy":
            return _resample(self.net.features(x), self.grid)
        if not official:  # the official code feeds the [-1, 1] images as they are
            x = ((x + 1.0) / 2.0 - self.mean) / self.std
        tokens = self.net.forward_features(x)[:, self.num_prefix_tokens:]
        b, n, d = tokens.shape
        if n != self.grid * self.grid:
            raise ConfigError(f"foundation model {self.name!r} produced {n} patch tokens, expected "
                              f"{self.grid}x{self.grid}; is num_prefix_tokens={self.num_prefix_tokens} right?")
        return tokens.transpose(1, 2).reshape(b, d, self.grid, self.grid)

    def extra_repr(self) -> str:
        """Name, kind, dim, grid and input size, shown by print(model)."""
        return (f"name={self.name!r}, kind={self.kind}, dim={self.dim}, grid={self.grid}, input_size={self.input_size}, "
                f"preprocess={self.preprocess}")


def _drop_own_weights(module, state_dict, prefix, local_metadata) -> None:
    """state_dict post-hook: remove the frozen network's tensors."""
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        del state_dict[key]


def _fill_own_weights(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                      error_msgs) -> None:
    """load_state_dict pre-hook: keep the current frozen weights wherever the incoming dict has none."""
    for key, value in module.net.state_dict(prefix=prefix + "net.").items():
        state_dict.setdefault(key, value)


def _resample(feats: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool a feature map down to grid x grid, or bilinearly upsample it."""
    if feats.shape[-1] == grid and feats.shape[-2] == grid:
        return feats
    if feats.shape[-1] > grid:
        return F.adaptive_avg_pool2d(feats, grid)
    return F.interpolate(feats, size=(grid, grid), mode="bilinear", align_corners=False)


def _patch_size(timm_name: str, entry: dict) -> int:
    """The ViT patch size: from the registry, the timm name (`patchNN`), or a weightless meta-device build."""
    if "patch_size" in entry:
        return entry["patch_size"]
    match = re.search(r"patch(\d+)", timm_name)
    if match:
        return int(match.group(1))
    import timm
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        raise ConfigError(f"timm model {timm_name!r} is not a ViT with patch_embed; use a ViT such as "
                          f"{VFM_REGISTRY['dinov2_vitl14']['timm']!r}")
    return patch[0] if isinstance(patch, (tuple, list)) else int(patch)


def _download_hint(name: str, timm_name: str, section: str = "tokenizer.vf") -> str:
    """How to get the weights file for a timm model by hand."""
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(timm_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    where = (f"model.safetensors from the Hugging Face hub repo {hub_id} (https://huggingface.co/{hub_id})"
             if hub_id else f"the pretrained weights of timm model {timm_name!r}")
    return (f"download {where} on a machine with internet, then pass pretrained_path='/path/to/model.safetensors' "
            f"(in a config: {section}.pretrained_path=/path/to/model.safetensors). Without any download, "
            f"{section}.foundation=toy uses the toy VFM pretrained here")


def _build_timm(name: str, timm_name: str, *, patch: int, grid: int, pretrained_path, offline: bool,
                random_init: bool, timm_kwargs: dict, section: str = "tokenizer.vf") -> nn.Module:
    """Create a timm ViT at img_size = grid * patch with weights from a file, the hub, or (random_init) none."""
    import timm
    kwargs = dict(img_size=grid * patch, **timm_kwargs)
    if random_init:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    if pretrained_path is not None:
        path = Path(pretrained_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"weights file {str(path)!r} for foundation model {name!r} does not exist; "
                                          f"check pretrained_path, or {_download_hint(name, timm_name, section)}")
        try:
            return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                     **kwargs)
        except Exception as exc:
            raise CheckpointError(f"{str(path)!r} does not hold weights of timm model {timm_name!r} "
                                  f"(foundation model {name!r}): {type(exc).__name__}: {str(exc)[:500]}. "
                                  f"Pass the file that matches the model, or change the model name") from exc
    if offline:
        raise WeightsUnavailableError(f"foundation model {name!r} (timm {timm_name!r}) needs pretrained weights, "
                                      f"but offline mode is on and no pretrained_path was given: "
                                      f"{_download_hint(name, timm_name, section)}")
    print(f"vavae_lab: fetching pretrained weights of {timm_name!r} through timm (Hugging Face hub cache)")
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except Exception as exc:
        raise WeightsUnavailableError(f"could not download weights for foundation model {name!r} (timm "
                                      f"{timm_name!r}): {type(exc).__name__}: {str(exc)[:300]}. To work offline, "
                                      f"{_download_hint(name, timm_name, section)}") from exc


def build_foundation_model(name: str, *, grid: int, pretrained_path=None, device="cpu", offline=None,
                           toy_config=None, timm_kwargs: dict | None = None,
                           preprocess: str = "normalized", section: str = "tokenizer.vf") -> FoundationModel:
    """A frozen FoundationModel by registry name, timm name, 'toy' or 'toy_random' (add '_random' for random weights).

    timm ViTs are built at img_size = grid * patch_size so their position embeddings fit the grid; weights
    come from `pretrained_path` (a .safetensors/.pth/.bin state dict, loaded by timm so position embeddings
    are resized) or from the hub unless `offline` (default: from the offline variables). `timm_kwargs` go to
    timm.create_model (e.g. depth=1 for tests); `preprocess` is one of PREPROCESS; `section` is the config section
    that names the model (tokenizer.vf, dit.repa), for the fixes the errors suggest.
    """
    if not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"foundation model grid={grid!r} must be a positive integer (the latent grid, e.g. 16 for f16)")
    offline = is_offline() if offline is None else bool(offline)
    entry = VFM_REGISTRY.get(name)
    if entry is not None and entry.get("toy"):
        cfg = coerce_toy_config(toy_config)
        net = get_toy_vfm(cfg, device=device) if entry["pretrained"] else random_toy_vfm(cfg)
        fm = FoundationModel(net, name=name, grid=grid, dim=cfg.feature_dim, input_size=cfg.resolution, kind="toy",
                             preprocess=preprocess)
        return fm.to(device)
    random_init = entry is None and name.endswith("_random")
    base = name[: -len("_random")] if random_init else name
    entry = VFM_REGISTRY.get(base, {})
    timm_name = entry.get("timm", base)
    import timm
    if not timm.is_model(timm_name):
        raise ConfigError(f"{section}.foundation={name!r} is an unknown foundation model: not in VFM_REGISTRY "
                          f"({sorted(VFM_REGISTRY)}) and not a timm model name (see timm.list_models('vit_*', "
                          "pretrained=True))")
    patch = _patch_size(timm_name, entry)
    try:
        net = _build_timm(name, timm_name, patch=patch, grid=grid, pretrained_path=pretrained_path,
                          offline=offline, random_init=random_init, timm_kwargs=dict(timm_kwargs or {}),
                          section=section)
    except VavaeLabError:
        raise
    except TypeError as exc:
        raise ConfigError(f"timm model {timm_name!r} cannot be built at img_size={grid * patch}: {exc}") from exc
    if not hasattr(net, "num_prefix_tokens") or not hasattr(net, "forward_features"):
        raise ConfigError(f"timm model {timm_name!r} is not a ViT with prefix tokens; use e.g. "
                          f"{VFM_REGISTRY['dinov2_vitl14']['timm']!r}")
    cfg = net.pretrained_cfg
    fm = FoundationModel(net, name=name, grid=grid, dim=net.num_features, input_size=grid * patch,
                         mean=cfg.get("mean"), std=cfg.get("std"), num_prefix_tokens=net.num_prefix_tokens,
                         preprocess=preprocess)
    return fm.to(device)
