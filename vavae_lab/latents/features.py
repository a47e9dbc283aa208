"""VFM patch features of the training images on the DiT's token grid, stored once in shards beside the latents (REPA).

Item i of a FeatureCache is image i of the training set and item N + i its horizontal flip, the order of a
LatentDataset made from the same data, so one index fetches a latent and the features of the image it came from.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_json
from ..errors import DataError
from .shards import (META_FILE, ShardView, gather_items, ordered_batches, read_meta, shard_name, shard_ranges,
                     write_shard)

FEATURES_FORMAT = "vavae_lab.features/1"
FEATURE_DTYPE = torch.float16  # REPA normalises the targets; half precision halves an ImageNet cache


def image_features(vfm, images: torch.Tensor) -> torch.Tensor:
    """(B, grid * grid, dim) patch tokens, row-major, of images in [-1, 1], from a FoundationModel built at the grid."""
    feats = vfm(images)
    return feats.flatten(2).transpose(1, 2)


def _shard_done(path: Path, start: int, count: int) -> bool:
    """True when `path` is a complete feature shard of items [start, start + count)."""
    try:
        view = ShardView(path)
    except (OSError, ValueError):
        return False
    return view.metadata.get("format") == FEATURES_FORMAT and view.metadata.get("start") == str(start) and \
        len(view) == count


def extract_features(vfm, dataset, out_dir: str | Path, *, identity: dict, flip: bool, shard_size: int = 10000,
                     batch_size: int = 256, num_workers: int = 0, device="cpu", progress: bool = True) -> Path:
    """Write the features of every (image, label) item of `dataset` (and of its flip) to shards under `out_dir`.

    Resumable: complete shards are kept. `identity` (what made them: data, VFM, grid) goes into meta.json and a
    folder made under another identity is refused. meta.json's last key `complete` turns true at the end.
    """
    out_dir = Path(out_dir)
    old = read_meta(out_dir)
    if old is not None and old.get("identity") != identity:
        raise DataError(f"{out_dir} holds features made under another identity ({old.get('identity')}); "
                        "delete it or pass another folder")
    ranges = shard_ranges(len(dataset), shard_size)
    meta = {"format": FEATURES_FORMAT, "identity": identity, "num_images": len(dataset), "flip": flip,
            "shards": [shard_name(i) for i in range(len(ranges))], "complete": False}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / META_FILE, meta, indent=2)
    todo = [i for i, (a, b) in enumerate(ranges) if not _shard_done(out_dir / shard_name(i), a, b - a)]
    bar = tqdm(total=sum(ranges[i][1] - ranges[i][0] for i in todo), desc="extract-features", unit="img",
               disable=not progress, dynamic_ncols=True)
    with torch.no_grad():
        for i in todo:
            start, stop = ranges[i]
            outs: dict[str, list[torch.Tensor]] = {"features": [], "features_flip": [], "labels": []}
            for images, labels in ordered_batches(dataset, start, stop, batch_size, num_workers):
                images = images.to(device)
                outs["features"].append(image_features(vfm, images).to("cpu", FEATURE_DTYPE))
                if flip:
                    outs["features_flip"].append(image_features(vfm, images.flip(-1)).to("cpu", FEATURE_DTYPE))
                outs["labels"].append(torch.as_tensor(labels, dtype=torch.int64))
                bar.update(len(images))
            write_shard(out_dir / shard_name(i), {k: torch.cat(v) for k, v in outs.items() if v},
                        {"format": FEATURES_FORMAT, "start": str(start), "count": str(stop - start)})
    bar.close()
    shape = ShardView(out_dir / shard_name(0)).arrays["features"].shape[1:]
    meta.pop("complete")
    meta.update(tokens=int(shape[0]), dim=int(shape[1]), complete=True)
    atomic_write_json(out_dir / META_FILE, meta, indent=2)
    return out_dir


def features_complete(folder: str | Path) -> bool:
    """Whether a feature cache finished (its meta.json says complete)."""
    return bool((read_meta(folder) or {}).get("complete"))


class FeatureCache:
    """The shards of `extract_features`, memory-mapped: get_batch(indices) -> (B, tokens, dim) float32 features."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = read_meta(self.folder)
        if meta is None or not meta.get("complete"):
            raise DataError(f"feature cache {self.folder} is missing or incomplete; extract it again (the chain "
                            "resumes it: complete shards are kept)")
        self.meta = meta
        self.num_images, self.flip = int(meta["num_images"]), bool(meta["flip"])
        self.tokens, self.dim = int(meta["tokens"]), int(meta["dim"])
        self._views = [ShardView(self.folder / name) for name in meta["shards"]]
        self.ranges = shard_ranges(self.num_images, len(self._views[0]))

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def get_batch(self, indices) -> torch.Tensor:
        """Features (B, tokens, dim) float32 of item indices in [0, len(self)); N + i is image i flipped."""
        idx = torch.as_tensor(indices).to("cpu", torch.long).view(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"feature index out of range for a cache of {len(self)} items")
        return gather_items(self._views, self.ranges, self.num_images, idx, "features", "features_flip").float()
