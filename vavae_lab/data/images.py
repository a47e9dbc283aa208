"""Image tensors between the models' [-1, 1] floats and uint8 pixels: the one conversion each way, the one uint8 check."""
from __future__ import annotations

import torch

from ..errors import DataError


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] to float in [-1, 1]: x / 127.5 - 1 (the inverse of `to_uint8` on its outputs)."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to uint8 in [0, 255]: clamp, scale by 127.5, round to nearest (returned on the CPU)."""
    if not torch.is_tensor(images) or not images.is_floating_point():
        raise DataError(f"to_uint8 expects a float tensor in [-1, 1], got {getattr(images, 'dtype', type(images))}")
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def check_uint8_images(images, what: str = "images", *, empty: str | None = None) -> torch.Tensor:
    """`images` if it is a uint8 N x 3 x H x W tensor with N >= 1, on the CPU; else DataError naming `what`.

    `empty` is the message for N = 0 (default: "got no <what>").
    """
    if not torch.is_tensor(images) or images.dtype != torch.uint8:
        got = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{what} must be a uint8 N x 3 x H x W tensor, got {got}; convert images in [-1, 1] "
                        "with vavae_lab.metrics.to_uint8(x)")
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"{what} must be N x 3 x H x W RGB images, got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise DataError(empty or f"got no {what}")
    return images.detach().cpu()
