"""The latent cache: extract_latents writes shards, stats and meta.json; LatentDataset reads them for the DiT."""
from __future__ import annotations

from .cache import META_FILE, encode_batch, extract_latents, latents_cache_dir, read_meta, weights_fingerprint
from .dataset import LatentDataset
from .shards import ShardView, shard_name, shard_ranges
from .stats import STATS_FILE, channel_stats, check_stats, denormalize, load_stats, normalize

__all__ = [
    "META_FILE", "STATS_FILE", "LatentDataset", "ShardView", "channel_stats", "check_stats", "denormalize",
    "encode_batch", "extract_latents", "latents_cache_dir", "load_stats", "normalize", "read_meta",
    "shard_name", "shard_ranges", "weights_fingerprint",
]
