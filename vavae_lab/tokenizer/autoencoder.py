"""The LDM KL-autoencoder ("VQGAN-KL") that VA-VAE uses, with the official checkpoint's parameter names."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from .blocks import AttnBlock, Downsample, ResnetBlock, Upsample, group_norm, swish

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class DiagonalGaussian:
    """The posterior N(mean, diag(exp(logvar))) read from the (B, 2*embed_dim, h, w) encoder moments."""

    def __init__(self, moments: torch.Tensor):
        if moments.ndim != 4 or moments.shape[1] % 2 != 0:
            raise ConfigError(
                f"DiagonalGaussian needs (B, 2*embed_dim, h, w) moments, got shape {tuple(moments.shape)}; "
                "pass the output of quant_conv (mean and logvar stacked on dim 1)"
            )
        self.moments = moments
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        # The clamp keeps exp(logvar) finite early in training, exactly like LDM.
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z = mean + std * eps with eps ~ N(0, I) (reparameterised, so gradients flow)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely latent, i.e. the mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over C, H, W: 0.5 * sum(mean^2 + var - 1 - logvar), shape (B,)."""
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=(1, 2, 3))


def _level_resolutions(resolution: int, levels: int) -> list[int]:
    """Spatial size of the feature map at each level of the encoder (level 0 = full resolution)."""
    return [resolution // 2**i for i in range(levels)]


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> (B, 2*z_channels, H/f, W/f) moments, in the LDM layout."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, resolution,
                 in_channels, dropout, norm_groups):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        sizes = _level_resolutions(resolution, len(ch_mult))
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * mult
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout=dropout, norm_groups=norm_groups))
                block_in = block_out
                if sizes[i] in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups=norm_groups))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(block_in)
            self.down.append(level)
        self.mid = _middle(block_in, dropout, norm_groups)
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the downsampling path, the middle (res, attn, res) and the output head."""
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h*f, w*f), in the LDM layout (unclamped)."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, resolution,
                 out_ch, dropout, norm_groups):
        super().__init__()
        sizes = _level_resolutions(resolution, len(ch_mult))
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _middle(block_in, dropout, norm_groups)
        levels = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            level.attn = nn.ModuleList()
            block_out = ch * ch_mult[i]
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, dropout=dropout, norm_groups=norm_groups))
                block_in = block_out
                if sizes[i] in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, norm_groups=norm_groups))
            if i != 0:
                level.upsample = Upsample(block_in)
            levels.append(level)
        # Built coarse-to-fine, stored fine-to-coarse: up[0] is the full-resolution level, as in LDM.
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = group_norm(block_in, norm_groups)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Run the input conv, the middle, the upsampling path (coarsest level first) and the output head."""
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


def _middle(channels: int, dropout: float, norm_groups: int) -> nn.Module:
    """The bottleneck: block_1 (res), attn_1 (attention), block_2 (res) at the coarsest level."""
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout=dropout, norm_groups=norm_groups)
    mid.attn_1 = AttnBlock(channels, norm_groups=norm_groups)
    mid.block_2 = ResnetBlock(channels, channels, dropout=dropout, norm_groups=norm_groups)
    return mid


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder of LDM and VA-VAE; state-dict keys match the official checkpoint.

    attn_resolutions are feature-map sizes in pixels (16 -> attention at the level whose map is 16x16).
    """

    def __init__(self, *, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), z_channels: int = 32, embed_dim: int = 32,
                 resolution: int = 256, in_channels: int = 3, out_ch: int = 3, dropout: float = 0.0,
                 norm_groups: int = 32):
        super().__init__()
        ch_mult, attn_resolutions = tuple(ch_mult), tuple(attn_resolutions)
        _validate(ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, embed_dim, resolution,
                  in_channels, out_ch, dropout, norm_groups)
        self.config = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                           attn_resolutions=attn_resolutions, z_channels=z_channels, embed_dim=embed_dim,
                           resolution=resolution, in_channels=in_channels, out_ch=out_ch, dropout=dropout,
                           norm_groups=norm_groups)
        shared = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                      z_channels=z_channels, resolution=resolution, dropout=dropout, norm_groups=norm_groups)
        self.encoder = Encoder(in_channels=in_channels, **shared)
        self.decoder = Decoder(out_ch=out_ch, **shared)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, kernel_size=1)

    @property
    def downsample_factor(self) -> int:
        """Spatial downsampling factor f = 2 ** (number of levels - 1); 16 for the official model."""
        return 2 ** (len(self.config["ch_mult"]) - 1)

    @property
    def latent_channels(self) -> int:
        """Channels d of the latent z (embed_dim); 32 for the official f16d32 model."""
        return self.config["embed_dim"]

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Images in [-1, 1], (B, in_channels, H, W) with H, W divisible by f -> the posterior over z."""
        self._check_images(x)
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, embed_dim, h, w) -> images (B, out_ch, h*f, w*f), unclamped, as the official decoder."""
        if z.ndim != 4 or z.shape[1] != self.latent_channels:
            raise DataError(
                f"decode expects latents of shape (B, {self.latent_channels}, h, w), got {tuple(z.shape)}; "
                "if they were normalised for diffusion, de-normalise them before decoding"
            )
        return self.decoder(self.post_quant_conv(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> images clamped to the valid range [-1, 1]."""
        return self.decode_raw(z).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """Encode, take a posterior sample (or the mode), decode: returns (recon_raw, posterior, z)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode_raw(z), posterior, z

    def encoder_last_layer(self) -> nn.Parameter:
        """encoder.conv_out.weight: the official VA-VAE takes the VF adaptive weight's gradients here."""
        return self.encoder.conv_out.weight

    def decoder_last_layer(self) -> nn.Parameter:
        """decoder.conv_out.weight: where the GAN adaptive weight compares gradient norms (LDM get_last_layer)."""
        return self.decoder.conv_out.weight

    def _check_images(self, x: torch.Tensor) -> None:
        """Raise DataError unless x is (B, in_channels, H, W) with H and W divisible by f."""
        f, c = self.downsample_factor, self.config["in_channels"]
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise DataError(
                f"encode expects images of shape (B, {c}, H, W) with H and W divisible by {f}, "
                f"got {tuple(x.shape)}; resize or crop the images (e.g. to {self.config['resolution']} px)"
            )


def _validate(ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, embed_dim, resolution,
              in_channels, out_ch, dropout, norm_groups) -> None:
    """Raise ConfigError for an architecture that cannot be built or would silently differ from intent."""
    for name, value in dict(ch=ch, num_res_blocks=num_res_blocks, z_channels=z_channels, embed_dim=embed_dim,
                            resolution=resolution, in_channels=in_channels, out_ch=out_ch,
                            norm_groups=norm_groups).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"autoencoder {name}={value!r} must be a positive integer")
    if not ch_mult or not all(isinstance(m, int) and m >= 1 for m in ch_mult):
        raise ConfigError(f"autoencoder ch_mult={ch_mult!r} must be a non-empty tuple of positive integers")
    if ch % norm_groups:  # then every width ch * mult is divisible too
        raise ConfigError(
            f"autoencoder ch={ch} is not divisible by norm_groups={norm_groups}, so GroupNorm cannot split "
            "its channels; choose ch as a multiple of norm_groups (e.g. ch=32 with norm_groups=8)"
        )
    f = 2 ** (len(ch_mult) - 1)
    if resolution % f:
        raise ConfigError(
            f"autoencoder resolution={resolution} is not divisible by the downsampling factor {f} "
            f"(= 2 ** (len(ch_mult) - 1)); use a multiple of {f} or fewer levels"
        )
    sizes = _level_resolutions(resolution, len(ch_mult))
    unused = [r for r in attn_resolutions if r not in sizes]
    if unused:
        raise ConfigError(
            f"autoencoder attn_resolutions={attn_resolutions} contains {unused}, which is no level's "
            f"feature-map size; the levels are {sizes} (resolution={resolution}, ch_mult={ch_mult}); "
            "pick sizes from that list or pass attn_resolutions=() for no attention outside the middle"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"autoencoder dropout={dropout!r} must be in [0, 1)")
