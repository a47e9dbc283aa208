"""The colour-balanced pixel loss: L1 on the data's principal colour components, each weighted by its spread.

LDM's pixel term is L1 on R, G and B. On the toy shapes almost all pixel variance is lightness: the principal
colour components' spreads are ~1.09 (lightness) and ~0.16 twice (chroma), so chroma is ~7x cheaper to get
wrong, and a small toy VAE can sit for hundreds of steps (or a whole run) on a plateau where it reconstructs
grey images. `tokenizer.loss.colour_balance = a` measures the residual in the principal colour basis and
weights component k by (s_max / s_k) ** a before the L1: a = 0 is LDM's loss, a = 1 weights every component
as much as lightness. The basis and spreads come from the run's own training pixels.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

COLOUR_SAMPLE = 2000  # training images the colour statistics are measured on


def colour_balance_matrix(images: torch.Tensor, strength: float) -> torch.Tensor:
    """The 3 x 3 matrix M = U diag((s_max / s) ** strength) U^T of images' (B x 3 x H x W) pixel colours.

    U holds the principal colour directions (eigenvectors of the pixel covariance), s their standard
    deviations; L1 of M (x - x') is the balanced pixel loss. strength 0 gives the identity.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"the colour balance needs RGB images B x 3 x H x W, got {tuple(images.shape)}")
    pixels = images.detach().double().permute(1, 0, 2, 3).reshape(3, -1)
    variances, directions = torch.linalg.eigh(torch.cov(pixels))
    spreads = variances.clamp_min(1e-12).sqrt()
    weights = (spreads.max() / spreads) ** float(strength)
    return (directions @ torch.diag(weights) @ directions.T).float()


def apply_colour_matrix(matrix: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """matrix (3 x 3) applied to the colour of every pixel of residual (B x 3 x H x W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(residual.dtype), residual)
