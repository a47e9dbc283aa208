"""The latent cache: extract_latents writes shards, stats and meta.json; LatentDataset reads them for the DiT.

Names are imported on first use, so reading the file format (shards, stats, the dataset) never loads
extraction, which sits above the run-folder loaders of `vavae_lab.runs`.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "META_FILE": "shards", "read_meta": "shards", "ShardView": "shards", "shard_name": "shards",
    "shard_ranges": "shards",
    "STATS_FILE": "stats", "channel_stats": "stats", "check_stats": "stats", "denormalize": "stats",
    "load_stats": "stats", "normalize": "stats",
    "LatentDataset": "dataset",
    "encode_batch": "cache", "extract_latents": "cache", "weights_fingerprint": "cache",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
