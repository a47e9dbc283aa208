"""Per-channel latent statistics (docs/paper.md §5): z_norm = (z - mean) / std for the DiT, back before decoding."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from ..errors import DataError
from .shards import write_shard

STATS_FILE = "stats.safetensors"
STD_FLOOR = 1e-6  # a constant channel would otherwise divide by zero
CHECK_TOLERANCE = 0.1  # normalised per-channel mean within 0.1 of 0 and std within 0.1 of 1
CHECK_SAMPLES = 2000


def normalize(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Tokenizer latents -> what the DiT trains on: (z - mean) / std per channel (stats 1 x C x 1 x 1)."""
    return (z - mean.to(z.device, z.dtype)) / std.to(z.device, z.dtype)


def denormalize(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """DiT samples -> tokenizer latents, the inverse of `normalize`: z * std + mean; do this before decoding."""
    return z * std.to(z.device, z.dtype) + mean.to(z.device, z.dtype)


def channel_moments(read_chunk: Callable[[torch.Tensor], torch.Tensor], indices: torch.Tensor,
                    chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std (two float64 vectors of length C) over all pixels of the latents at `indices`.

    `read_chunk(idx)` returns the latents (n x C x h x w) at sorted indices `idx`; two passes in float64
    (the mean, then the centred squares) keep the result exact for large caches.
    """
    if indices.numel() == 0:
        raise DataError("cannot compute latent statistics of an empty selection; the dataset holds no images")
    total, count = None, 0
    for i in range(0, indices.numel(), chunk):
        z = read_chunk(indices[i:i + chunk]).double()
        part = z.sum(dim=(0, 2, 3))
        total = part if total is None else total + part
        count += z.shape[0] * z.shape[2] * z.shape[3]
    mean = total / count
    squares = torch.zeros_like(mean)
    for i in range(0, indices.numel(), chunk):
        z = read_chunk(indices[i:i + chunk]).double()
        squares += (z - mean.view(1, -1, 1, 1)).pow(2).sum(dim=(0, 2, 3))
    return mean, (squares / max(count - 1, 1)).sqrt()


def channel_stats(read_chunk: Callable[[torch.Tensor], torch.Tensor], indices: torch.Tensor,
                  chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased std (1 x C x 1 x 1, float32; std floored at STD_FLOOR) for normalisation.

    The `channel_moments` of the latents at `indices`. Equal to `z.mean((0, 2, 3), keepdim=True)` and
    `z.std((0, 2, 3), keepdim=True)` of the whole selection, as upstream.
    """
    mean, std = channel_moments(read_chunk, indices, chunk)
    return mean.float().view(1, -1, 1, 1), std.clamp_min(STD_FLOOR).float().view(1, -1, 1, 1)


def stats_subset(num_items: int, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of the latents the statistics use: all of them, or `count` drawn at random with `seed`.

    A random subset matters for ImageFolder data, whose order is sorted by class (the first 10k ImageNet
    images cover only ~8 classes).
    """
    if count >= num_items:
        return torch.arange(num_items)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_items, generator=g)[:count].sort().values


def save_stats(path: str | Path, mean: torch.Tensor, std: torch.Tensor, count: int) -> None:
    """Write mean and std (1 x C x 1 x 1) to a safetensors file atomically."""
    write_shard(path, {"mean": mean.float(), "std": std.float()}, {"count": str(count)})


def load_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read (mean, std), each 1 x C x 1 x 1 float32, from a stats file written by `save_stats`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"latent statistics {path} are missing; run `python -m vavae_lab extract-latents` "
                        "again with the same config and --out (it resumes and only recomputes what is missing)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            mean, std = fh.get_tensor("mean"), fh.get_tensor("std")
    except Exception as exc:  # a truncated or foreign file
        raise DataError(f"latent statistics {path} cannot be read ({type(exc).__name__}: {exc}); delete it and "
                        "run `python -m vavae_lab extract-latents` again to recompute it") from exc
    if mean.ndim != 4 or mean.shape != std.shape or mean.shape[0] != 1 or mean.shape[2:] != (1, 1):
        raise DataError(f"latent statistics {path} hold mean {tuple(mean.shape)} and std {tuple(std.shape)}; "
                        "expected both 1 x C x 1 x 1; delete the file and re-run extract-latents")
    return mean.float(), std.float()


def check_stats(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, where: str = "the cache") -> None:
    """Raise DataError unless normalise(z) has per-channel mean within 0.1 of 0 and std within 0.1 of 1.

    With ~2k latents the sampling error of a channel mean is about 1/sqrt(2000) = 0.02 in normalised units,
    so 0.1 never fires by chance, while stats of another tokenizer (or none at all) are off by far more.
    """
    if z.shape[1] != mean.shape[1]:
        raise DataError(f"the latents in {where} have {z.shape[1]} channels but the statistics have "
                        f"{mean.shape[1]}: the stats file belongs to another tokenizer. Re-extract the cache "
                        "with `python -m vavae_lab extract-latents` into a fresh --out folder")
    z = z.double()
    m, s = mean.double().view(-1), std.double().view(-1)
    sample_mean = z.mean(dim=(0, 2, 3))
    sample_std = z.std(dim=(0, 2, 3)) if z.numel() > z.shape[1] else torch.zeros_like(sample_mean)
    slack = CHECK_TOLERANCE * s + STD_FLOOR
    bad_mean = (sample_mean - m).abs() > slack
    bad_std = (sample_std - s).abs() > slack
    if bool(bad_mean.any() or bad_std.any()):
        channel = int((bad_mean | bad_std).nonzero()[0])
        norm_mean = float((sample_mean[channel] - m[channel]) / s[channel])
        norm_std = float(sample_std[channel] / s[channel])
        raise DataError(
            f"the latent statistics do not match the latents in {where}: normalised channel {channel} has mean "
            f"{norm_mean:.3f} and std {norm_std:.3f} on {z.shape[0]} latents (expected 0 +- {CHECK_TOLERANCE} "
            f"and 1 +- {CHECK_TOLERANCE}; {int((bad_mean | bad_std).sum())} of {z.shape[1]} channels are off). "
            "The stats were computed for other latents (another tokenizer, or edited shards); a DiT trained "
            "this way samples badly (the upstream 'FID 130 instead of 40' bug). Re-extract with "
            "`python -m vavae_lab extract-latents` into a fresh --out folder")
