"""How much of a foundation model's features a latent holds: the best linear map from latent to features, its R^2,
and PCA colour maps of features and mapped latents in the same colours (what the VF loss aligns, VA-VAE Sec. 3)."""
from __future__ import annotations

import torch
from matplotlib.figure import Figure

from ..errors import DataError


def _positions(grid: torch.Tensor) -> torch.Tensor:
    """A B x C x h x w map as (B * h * w) x C rows, one per grid position."""
    if grid.ndim != 4:
        raise DataError(f"expected a B x C x h x w map, got shape {tuple(grid.shape)}")
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]).double()


def projected(latent: torch.Tensor, features: torch.Tensor, *, ridge: float = 1e-6) -> torch.Tensor:
    """The latent mapped into the feature space by the best affine map from each latent vector to the VFM feature at
    the same grid position (least squares with a tiny ridge): B x D x h x w, like `features`."""
    z, f = _positions(latent), _positions(features)
    if z.shape[0] != f.shape[0]:
        raise DataError(f"latent {tuple(latent.shape)} and features {tuple(features.shape)} must share batch and grid")
    x = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ f)
    b, _, h, wd = features.shape
    return (x @ w).reshape(b, h, wd, -1).permute(0, 3, 1, 2).to(features.dtype)


def linear_r2(latent: torch.Tensor, features: torch.Tensor) -> float:
    """R^2 of `projected`, pooled over every feature channel: 1 when the latent holds the VFM's features linearly, 0
    when it predicts nothing beyond their mean. Both maps are B x C x h x w on the same grid."""
    f = _positions(features)
    residual = ((f - _positions(projected(latent, features))) ** 2).sum()
    return float(1 - residual / ((f - f.mean(0)) ** 2).sum())


def pca_rgb(grid: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The first three principal components of a B x C x h x w map as RGB in [0, 1]: B x 3 x h x w. The components
    and their 1st-99th percentile ranges come from `reference` (default: the map itself; same C), so maps shown
    against one reference share its colours (fewer than 3 channels: zeros)."""
    ref = _positions(grid if reference is None else reference)
    mean = ref.mean(0)
    _, _, v = torch.linalg.svd(ref - mean, full_matrices=False)
    basis = v[:3].T
    lo = torch.quantile((ref - mean) @ basis, 0.01, dim=0)
    hi = torch.quantile((ref - mean) @ basis, 0.99, dim=0)
    pcs = ((_positions(grid) - mean) @ basis - lo) / (hi - lo).clamp_min(1e-12)
    if pcs.shape[1] < 3:
        pcs = torch.cat([pcs, torch.zeros(len(pcs), 3 - pcs.shape[1], dtype=pcs.dtype)], dim=1)
    b, _, h, w = grid.shape
    return pcs.clamp(0, 1).reshape(b, h, w, 3).permute(0, 3, 1, 2).float()


def plot_alignment(images: torch.Tensor, rows: dict[str, torch.Tensor], *, reference: torch.Tensor | None = None,
                   cell: float = 1.2, title: str | None = None) -> Figure:
    """The images (B x 3 x H x W in [-1, 1]) above one row of PCA colour maps per named B x C x h x w map, all in the
    colours of `reference`'s components when given (e.g. the VFM features, with latents `projected` onto them)."""
    n = images.shape[0]
    fig = Figure(figsize=(cell * n, cell * (1 + len(rows))), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1 + len(rows), n, squeeze=False)
    for j in range(n):
        axes[0][j].imshow(((images[j] + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy())
    axes[0][0].set_ylabel("image", rotation=0, ha="right", va="center", fontsize=8)
    for i, (name, grid) in enumerate(rows.items(), start=1):
        rgb = pca_rgb(grid, reference)
        for j in range(n):
            axes[i][j].imshow(rgb[j].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[i][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
