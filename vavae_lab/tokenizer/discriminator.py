"""The PatchGAN discriminator of taming-transformers / LDM and its hinge and vanilla losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def weights_init(module: nn.Module) -> None:
    """taming's init: conv weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02) and biases 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.constant_(module.bias, 0.0)


class NLayerDiscriminator(nn.Module):
    """Pix2Pix PatchGAN: stride-2 4x4 convs with BatchNorm and LeakyReLU(0.2), one logit per image patch.

    Layers live in `self.main` (an nn.Sequential) in taming's order, so `loss.discriminator.*` entries of
    an official VA-VAE checkpoint load into it directly. For 256 px inputs and n_layers=3 the output is
    (B, 1, 30, 30); each logit sees a 70x70 receptive field.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        for name, value in dict(input_nc=input_nc, ndf=ndf, n_layers=n_layers).items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"NLayerDiscriminator {name}={value!r} must be a positive integer")
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            # The last of these keeps the size (stride 1); BatchNorm makes conv biases redundant.
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, input_nc, H, W) -> patch logits (B, 1, h, w); higher means 'looks real'."""
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator: 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the discriminator: 0.5 * (mean(softplus(-real)) + mean(softplus(fake)))."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
