"""REPA (Yu et al. 2024, arXiv:2410.06940): align the DiT's hidden states after block k to a VFM's patch features.

The DiT trains on an ordinary tokenizer's latents as before; a small MLP (the projector) maps the tokens after
block k to the VFM's feature width, and the loss adds lambda times the negative cosine similarity between the
projected tokens and the VFM's patch features of the clean image, averaged over tokens and the batch
(sihyun-yu/REPA loss.py 81-88; projector models/sit.py 16-23, applied after block `encoder_depth`, 281-283).
The projector is used only in training: sampling calls the DiT alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def build_projector(hidden_size: int, projector_dim: int, feature_dim: int) -> nn.Sequential:
    """REPA's projector: Linear -> SiLU -> Linear -> SiLU -> Linear, from the DiT width to the VFM feature width."""
    return nn.Sequential(nn.Linear(hidden_size, projector_dim), nn.SiLU(), nn.Linear(projector_dim, projector_dim),
                         nn.SiLU(), nn.Linear(projector_dim, feature_dim))


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample REPA loss (B,): minus the cosine similarity of projected (B, N, D) and target (B, N, D) tokens,
    averaged over the N tokens."""
    if projected.shape != target.shape:
        raise ConfigError(f"REPA: projected tokens {tuple(projected.shape)} and VFM features {tuple(target.shape)} "
                          f"must have the same (batch, tokens, width); the feature grid must be the DiT's token grid")
    return -(F.normalize(projected, dim=-1) * F.normalize(target.to(projected.dtype), dim=-1)).sum(-1).mean(-1)


class Repa(nn.Module):
    """The REPA term of a training step: the projector, the block whose output it reads and the weight lambda.

    `loss(transport, model, x, y, target)` runs the transport's loss once with `model` returning the tokens after
    block `depth` as well, and adds weight x repa_loss to it; the output gains "repa" (the batch mean of the
    alignment loss) and keeps "per_sample" as the flow loss alone.
    """

    def __init__(self, *, hidden_size: int, feature_dim: int, depth: int, weight: float, projector_dim: int):
        super().__init__()
        if weight < 0:
            raise ConfigError(f"dit.repa.weight={weight!r} must be >= 0 (REPA uses 0.5; 0 turns it off)")
        if depth < 1 or projector_dim < 1 or feature_dim < 1:
            raise ConfigError(f"REPA needs depth >= 1 (got {depth}), projector_dim >= 1 (got {projector_dim}) and "
                              f"feature_dim >= 1 (got {feature_dim})")
        self.depth, self.weight = depth, float(weight)
        self.projector = build_projector(hidden_size, projector_dim, feature_dim)

    def loss(self, transport, model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> dict:
        """The transport's loss dict with weight x REPA added to "loss"; target (B, N, D) VFM features of x's images."""
        hidden = []

        def forward(x_t, t, labels):
            out, tokens = model(x_t, t, labels, hidden_block=self.depth)
            hidden.append(tokens)
            return out

        out = transport.loss(forward, x, y)
        align = repa_loss(self.projector(hidden[0]), target).mean()
        return {**out, "loss": out["loss"] + self.weight * align, "repa": align}
