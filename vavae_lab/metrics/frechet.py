"""The Fréchet distance between two Gaussian fits of features, with a symmetric (eigen) matrix square root."""
from __future__ import annotations

import math

import torch

from ..errors import DataError


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance) of N x D features in float64; N must exceed D or the covariance is singular."""
    if features.dim() != 2:
        raise DataError(f"features must be N x D, got shape {tuple(features.shape)}")
    n, d = features.shape
    if n <= d:
        raise DataError(f"FID needs more images than feature dimensions: got {n} images for {d}-dimensional "
                        f"features, so their covariance is singular; score at least {d + 1} images (thousands "
                        "for a stable number)")
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (n - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr (S1 S2)^1/2 = sum sqrt(eig(S1^1/2 S2 S1^1/2)).

    The product S1^1/2 S2 S1^1/2 is symmetric positive semi-definite, so its eigenvalues are real and (up to
    rounding) non-negative: no complex parts to drop, unlike the square root of S1 S2 itself.
    """
    root = _sqrt_psd(sigma1.double())
    middle = root @ sigma2.double() @ root
    trace_sqrt = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp(min=0).sqrt().sum()
    value = float(((mu1 - mu2) ** 2).sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt)
    if not math.isfinite(value):
        raise DataError("the Fréchet distance is not finite: the features hold NaN or infinite values")
    return value
