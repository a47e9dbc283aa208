"""How many directions a latent space uses: the PCA spectrum of its latent vectors and the participation ratio."""
from __future__ import annotations

import torch

from ..errors import DataError


def latent_spectrum(latents: torch.Tensor) -> torch.Tensor:
    """Variance shares (descending, summing to 1) of the principal directions of N x d x h x w latents' d-vectors."""
    if latents.ndim != 4 or latents.shape[0] * latents.shape[2] * latents.shape[3] < 2:
        raise DataError(f"latent_spectrum needs N x d x h x w latents with at least 2 vectors, got "
                        f"{tuple(latents.shape)}")
    vectors = latents.detach().double().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    variances = torch.linalg.eigvalsh(torch.cov(vectors.T)).flip(0).clamp_min(0)
    return (variances / variances.sum()).float()


def participation_ratio(spectrum: torch.Tensor) -> float:
    """(sum s)^2 / sum s^2 of a spectrum: how many equally used directions hold the same variance (1 to d)."""
    s = spectrum.double()
    return float(s.sum() ** 2 / (s ** 2).sum())
