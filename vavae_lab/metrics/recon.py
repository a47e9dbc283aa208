"""Pixel-level reconstruction metrics: PSNR and SSIM for image batches in [-1, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

# The MSE is clamped here before the log, so identical images give a large finite PSNR (100 dB for
# data_range 1, 106 dB for data_range 2) instead of inf, and averages over a set stay finite.
MSE_FLOOR = 1e-10


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    """Raise DataError unless x and y are same-shaped B x C x H x W floating-point tensors."""
    if not (torch.is_tensor(x) and torch.is_tensor(y)):
        raise DataError(f"{name} expects two torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise DataError(f"{name}: shapes differ ({tuple(x.shape)} vs {tuple(y.shape)}); compare an image "
                        "batch with its reconstruction of the same size")
    if x.dim() != 4:
        raise DataError(f"{name} expects B x C x H x W batches, got shape {tuple(x.shape)}; "
                        "add a batch dimension with x[None] for a single image")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise DataError(f"{name} expects float images in [-1, 1], got {x.dtype} and {y.dtype}; "
                        "convert uint8 images with x.float() / 127.5 - 1")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(range^2 / MSE), with the MSE clamped at 1e-10."""
    _check_pair(x, y, "psnr")
    if data_range <= 0:
        raise ConfigError(f"psnr: data_range={data_range} must be positive (2.0 for images in [-1, 1])")
    diff = x.double() - y.double()
    mse = diff.pow(2).flatten(1).mean(dim=1).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(data_range**2 / mse)).to(x.dtype)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """The normalised 1-D Gaussian window of the given odd size centred on the middle tap."""
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"SSIM window size={size} must be a positive odd number (11 is standard)")
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _blur_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of each channel with no padding (output shrinks by size - 1)."""
    channels = x.shape[1]
    size = window.numel()
    kernel_h = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    kernel_v = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    x = F.conv2d(x, kernel_h, groups=channels)
    return F.conv2d(x, kernel_v, groups=channels)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, win_size: int = 11,
             sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """The per-pixel SSIM map (B x C x H-win+1 x W-win+1) of Wang et al. 2004 on the valid region."""
    _check_pair(x, y, "ssim")
    height, width = x.shape[-2:]
    if min(height, width) < win_size:
        raise DataError(f"ssim: images are {height} x {width}, smaller than the {win_size}-px window; "
                        f"pass win_size <= {min(height, width)} (odd) or compare larger images")
    if data_range <= 0:
        raise ConfigError(f"ssim: data_range={data_range} must be positive (2.0 for images in [-1, 1])")
    x = x.double()
    y = y.double()
    window = gaussian_window(win_size, sigma, dtype=x.dtype, device=x.device)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x = _blur_valid(x, window)
    mu_y = _blur_valid(y, window)
    var_x = _blur_valid(x * x, window) - mu_x**2
    var_y = _blur_valid(y * y, window) - mu_y**2
    cov_xy = _blur_valid(x * y, window) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return luminance * contrast_structure


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image: the SSIM map averaged over channels and the valid region."""
    out = ssim_map(x, y, data_range=data_range, win_size=win_size, sigma=sigma, k1=k1, k2=k2)
    return out.flatten(1).mean(dim=1).to(x.dtype)
