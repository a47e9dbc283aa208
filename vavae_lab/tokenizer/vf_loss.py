"""The VF (vision foundation model alignment) loss of VA-VAE and the adaptive loss weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..choices import PROJECTIONS
from vavae_lab.errors import ConfigError


def gradient_norms(loss_main: torch.Tensor, loss_aux: torch.Tensor,
                   layer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(||d loss_main / d layer||, ||d loss_aux / d layer||), detached; both graphs are retained for the caller."""
    if not layer.requires_grad:
        raise ConfigError(
            "adaptive_weight needs a layer weight that requires grad; pass a trainable parameter "
            "such as the encoder's or decoder's last conv weight."
        )
    norms = []
    for name, loss in (("main", loss_main), ("auxiliary", loss_aux)):
        if not loss.requires_grad:
            raise ConfigError(
                f"adaptive_weight: the {name} loss has no graph; compute it with gradients enabled "
                "(not under torch.no_grad()) from the model's outputs."
            )
        (grad,) = torch.autograd.grad(loss, layer, retain_graph=True, allow_unused=True)
        if grad is None:
            raise ConfigError(
                f"adaptive_weight: the {name} loss does not depend on the given layer; pass the last "
                "layer of the network that produces both losses (encoder conv_out for VF, decoder "
                "conv_out for GAN)."
            )
        norms.append(torch.linalg.vector_norm(grad).detach())
    return norms[0], norms[1]


def adaptive_weight(
    loss_main: torch.Tensor,
    loss_aux: torch.Tensor,
    layer: torch.Tensor,
    *,
    eps: float = 1e-4,
    max_value: float = 1e8,
) -> torch.Tensor:
    """Return ||d loss_main / d layer|| / (||d loss_aux / d layer|| + eps), clamped to [0, max_value] and detached.

    This balances an auxiliary loss against the main one at a shared layer: the VF weight is
    taken at the encoder's last conv (max 1e8), the GAN weight at the decoder's last conv (max 1e4).
    Both graphs are retained, so the caller can still backpropagate the total loss afterwards.
    """
    main, aux = gradient_norms(loss_main, loss_aux, layer)
    return weight_from_norms(main, aux, eps=eps, max_value=max_value)


def weight_from_norms(main: torch.Tensor, aux: torch.Tensor, *, eps: float = 1e-4,
                      max_value: float = 1e8) -> torch.Tensor:
    """`adaptive_weight` from the two gradient norms: main / (aux + eps), clamped to [0, max_value]."""
    return torch.clamp(main / (aux + eps), 0.0, max_value)


def _pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of grid positions: B x C x h x w -> B x N x N, N = h * w."""
    unit = F.normalize(x.flatten(2), dim=1)
    return torch.einsum("bci,bcj->bij", unit, unit)


class VFLoss(nn.Module):
    """Align a latent z (B x d x h x w) with frozen foundation-model features f (B x D x h x w).

    A learnable 1x1 conv, ``linear_proj`` (the official name), maps one side to the other's width:
    ``projection="reverse"`` (the paper's default) maps z from d to D without bias;
    ``projection="forward"`` maps f from D down to d (with a bias, as in the official code).
    Two margin-relaxed terms are then computed on the projected pair (z', f'):

    * mcos = mean_{b,i} relu(1 - m1 - cos(z'_bi, f'_bi))  (marginal cosine similarity),
    * mdms = mean_{b,i,j} relu(|cos(z'_bi, z'_bj) - cos(f'_bi, f'_bj)| - m2)  (distance matrix),

    and vf = w_mcos * mcos + w_mdms * mdms. A disabled term is reported as 0 and left out of vf.
    """

    def __init__(
        self,
        latent_dim: int,
        vfm_dim: int,
        *,
        projection: str = "reverse",
        use_mcos: bool = True,
        use_mdms: bool = True,
        m1: float = 0.5,
        m2: float = 0.25,
        w_mcos: float = 1.0,
        w_mdms: float = 1.0,
    ):
        super().__init__()
        # the config's gate (config_rules) checks these values by their override names; a direct call gets this
        if projection not in PROJECTIONS or not (use_mcos or use_mdms) or min(m1, m2, w_mcos, w_mdms) < 0:
            raise ConfigError(f"VFLoss: projection must be one of {PROJECTIONS}, at least one of use_mcos / "
                              f"use_mdms true, margins and weights >= 0; got projection={projection!r}, "
                              f"use_mcos={use_mcos}, use_mdms={use_mdms}, m1={m1}, m2={m2}, w_mcos={w_mcos}, "
                              f"w_mdms={w_mdms}")
        self.latent_dim = latent_dim
        self.vfm_dim = vfm_dim
        self.projection = projection
        self.use_mcos = use_mcos
        self.use_mdms = use_mdms
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.w_mcos = float(w_mcos)
        self.w_mdms = float(w_mdms)
        if projection == "reverse":
            self.linear_proj = nn.Conv2d(latent_dim, vfm_dim, kernel_size=1, bias=False)
        else:
            self.linear_proj = nn.Conv2d(vfm_dim, latent_dim, kernel_size=1, bias=True)

    def extra_repr(self) -> str:
        """Summarise the settings in print(module)."""
        return (
            f"projection={self.projection!r}, use_mcos={self.use_mcos}, use_mdms={self.use_mdms}, "
            f"m1={self.m1}, m2={self.m2}, w_mcos={self.w_mcos}, w_mdms={self.w_mdms}"
        )

    def _check_inputs(self, z: torch.Tensor, features: torch.Tensor) -> None:
        """Raise ConfigError when z and the features do not fit this module or each other."""
        if z.dim() != 4 or features.dim() != 4:
            raise ConfigError(
                f"VFLoss expects z and features as B x C x h x w tensors, got shapes {tuple(z.shape)} "
                f"and {tuple(features.shape)}; turn ViT tokens (B x N x D) into a grid first."
            )
        if z.shape[0] != features.shape[0]:
            raise ConfigError(
                f"VFLoss: z has batch {z.shape[0]} but features have batch {features.shape[0]}; "
                "compute the features from the same images that were encoded."
            )
        if z.shape[1] != self.latent_dim:
            raise ConfigError(
                f"VFLoss: z has {z.shape[1]} channels but latent_dim={self.latent_dim}; build VFLoss "
                "with the autoencoder's embed_dim."
            )
        if features.shape[1] != self.vfm_dim:
            raise ConfigError(
                f"VFLoss: features have {features.shape[1]} channels but vfm_dim={self.vfm_dim}; build "
                "VFLoss with the foundation model's feature width (1024 for DINOv2/MAE ViT-L)."
            )
        if z.shape[2:] != features.shape[2:]:
            raise ConfigError(
                f"VFLoss: the VFM grid {tuple(features.shape[2:])} must equal the latent grid "
                f"{tuple(z.shape[2:])}; resize the images fed to the foundation model so that it "
                "yields one patch token per latent position (e.g. 224 px for DINOv2/14 on an f16 "
                "256 px latent)."
            )

    def project(self, z: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the pair (z', f') the loss compares, after the learnable projection."""
        if self.projection == "reverse":
            return self.linear_proj(z), features
        return z, self.linear_proj(features)

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return scalars {"vf", "mcos", "mdms"}; the foundation-model features are treated as constants."""
        self._check_inputs(z, features)
        z_proj, f_proj = self.project(z, features.detach())
        zero = z.new_zeros(())
        vf = zero
        mcos = mdms = zero
        if self.use_mcos:
            cos = F.cosine_similarity(z_proj, f_proj, dim=1)
            mcos = F.relu(1.0 - self.m1 - cos).mean()
            vf = vf + self.w_mcos * mcos
        if self.use_mdms:
            diff = (_pairwise_cosine(z_proj) - _pairwise_cosine(f_proj)).abs()
            mdms = F.relu(diff - self.m2).mean()
            vf = vf + self.w_mdms * mdms
        return {"vf": vf, "mcos": mcos, "mdms": mdms}
