"""Building blocks of the LDM KL-autoencoder: residual, attention, down- and upsampling layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUPNORM_EPS = 1e-6


def swish(x: torch.Tensor) -> torch.Tensor:
    """The swish / SiLU non-linearity x * sigmoid(x) used throughout the LDM autoencoder."""
    return F.silu(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the LDM settings: `groups` groups, eps 1e-6, learnable affine."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=GROUPNORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: norm, swish, conv3x3, norm, swish, dropout, conv3x3, plus a skip.

    The skip is a 1x1 conv named `nin_shortcut` when the channel count changes, as in LDM.
    There is no timestep input: the autoencoder never uses one, so there is no `temb_proj`.
    """

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x (projected if the width changes) plus the residual branch."""
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv q, k, v and output projections."""

    def __init__(self, channels: int, *, norm_groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x + proj_out(softmax(q k^T / sqrt(C)) v), attention taken over the h*w positions."""
        b, c, h, w = x.shape
        normed = self.norm(x)
        # (B, C, H, W) -> (B, 1 head, H*W tokens, C); the default scale of SDPA is 1/sqrt(C).
        q, k, v = (conv(normed).reshape(b, 1, c, h * w).transpose(2, 3) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the spatial size: zero-pad one pixel on the right and bottom only, then a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (B, C, H/2, W/2) map; the asymmetric pad (0, 1, 0, 1) matches the official weights."""
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Double the spatial size: nearest-neighbour 2x interpolation, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the (B, C, 2H, 2W) map."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
