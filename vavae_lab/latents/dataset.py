"""A latent cache as a Dataset: shards held in memory (or memory-mapped once), normalised by tensor indexing."""
from __future__ import annotations

import bisect
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from . import stats as _stats
from .shards import META_FILE, ShardView, gather_items, gather_rows, read_meta, shard_problem
from .stats import CHECK_SAMPLES, STATS_FILE, load_stats

_RUN_EXTRACT = ("run `python -m vavae_lab extract-latents --preset <preset> --tokenizer <run dir> --out {dir}` "
                "(it resumes: complete shards are kept)")


def _memory_budget() -> int:
    """Bytes of shards to copy into RAM by default: a quarter of physical memory (8 GiB if unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class LatentDataset(Dataset):
    """The latents of `extract_latents`, normalised per channel: item i < N is latent i, item N + i its flip.

    With flip=True the dataset has 2N items, so an epoch sees every image once each way (deterministic,
    unlike upstream's coin flip per access); with flip=False (or a cache without flips) it has N items.
    `in_memory=None` copies the shards into RAM when they fit in a quarter of it, otherwise it memory-maps
    each shard once; both index tensors, never re-open a file per item. On load, a sample of up to 2k
    normalised latents must have per-channel mean 0 +- 0.1 and std 1 +- 0.1, else DataError (stats of
    other latents: the upstream "forgot to normalise" bug).
    """

    def __init__(self, cache_dir: str | Path, *, normalize: bool = True, flip: bool = True,
                 in_memory: bool | None = None, check_stats: bool = True):
        self.cache_dir = Path(cache_dir)
        fix = _RUN_EXTRACT.format(dir=self.cache_dir)
        if not self.cache_dir.is_dir():
            raise DataError(f"latent cache {self.cache_dir} does not exist; {fix}")
        meta = read_meta(self.cache_dir)
        if meta is None:
            raise DataError(f"latent cache {self.cache_dir} has no readable {META_FILE}; {fix}")
        if not meta.get("complete"):
            raise DataError(f"latent cache {self.cache_dir} is incomplete (extraction was interrupted or is still "
                            f"running); {fix}")
        self.meta: dict = meta
        self.latent_shape: tuple[int, int, int] = tuple(meta["latent_shape"])
        self.num_classes: int = int(meta["num_classes"])
        self.num_images: int = int(meta["num_images"])
        self.normalize_latents = normalize
        self.flip = bool(flip and meta["flip"])
        self.mean, self.std = load_stats(self.cache_dir / meta.get("stats", {}).get("file", STATS_FILE))
        if self.mean.shape[1] != self.latent_shape[0]:
            raise DataError(f"{self.cache_dir}: the stats have {self.mean.shape[1]} channels but the latents "
                            f"{self.latent_shape[0]}; the stats file belongs to another cache; {fix}")

        self.ranges: list[tuple[int, int]] = []
        self._views: list[ShardView] = []
        start = 0
        for name in meta["shards"]:
            path = self.cache_dir / name
            view = None
            try:
                view = ShardView(path)
            except (OSError, ValueError):
                pass
            count = len(view) if view is not None else 0
            problem = shard_problem(path, start=start, count=count, latent_shape=self.latent_shape,
                                    flip=meta["flip"]) if view is not None else "it is missing or unreadable"
            if problem is not None:
                raise DataError(f"latent shard {path} is damaged: {problem}; delete it and {fix}")
            self._views.append(view)
            self.ranges.append((start, start + count))
            start += count
        if start != self.num_images:
            raise DataError(f"{self.cache_dir}: the shards hold {start} latents but meta.json says "
                            f"{self.num_images}; {fix}")

        keys = ["latents", "labels"] + (["latents_flip"] if self.flip else [])
        size = sum(v.nbytes(k) for v in self._views for k in keys)
        self.in_memory = size <= _memory_budget() if in_memory is None else bool(in_memory)
        self._starts = [a for a, _ in self.ranges]
        self._latents: torch.Tensor | None = None  # in RAM: all items, flips after the originals (len(self) rows)
        self._labels: torch.Tensor | None = None
        if self.in_memory:  # preallocated and filled, so RAM holds one copy, not shards plus a concatenation
            n = self.num_images
            self._latents = torch.empty((len(self), *self.latent_shape),
                                        dtype=self._views[0].torch_dtypes["latents"])
            self._labels = torch.empty(n, dtype=torch.int64)
            for view, (a, b) in zip(self._views, self.ranges):
                self._latents[a:b] = view.read("latents")
                if self.flip:
                    self._latents[n + a:n + b] = view.read("latents_flip")
                self._labels[a:b] = view.read("labels")
        self._mean_c, self._std_c = self.mean[0], self.std[0]  # C x 1 x 1, for single items
        if check_stats:
            g = torch.Generator().manual_seed(0)
            sample = torch.randperm(self.num_images, generator=g)[:CHECK_SAMPLES].sort().values
            _stats.check_stats(self._raw(sample)[0], self.mean, self.std, where=str(self.cache_dir))

    def __len__(self) -> int:
        return 2 * self.num_images if self.flip else self.num_images

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Tokenizer latents -> DiT space: (z - mean) / std per channel."""
        return _stats.normalize(z, self.mean, self.std)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """DiT samples -> tokenizer latents (z * std + mean); call this before the tokenizer decodes."""
        return _stats.denormalize(z, self.mean, self.std)

    def _raw(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised latents and labels of item indices in [0, len(self)), by tensor indexing."""
        n = self.num_images
        if self.in_memory:
            return self._latents[idx], self._labels[idx % n]
        z = gather_items(self._views, self.ranges, n, idx, "latents", "latents_flip")
        image = idx % n
        order = image.argsort()
        return z, gather_rows(self._views, self.ranges, image[order], "labels")[order.argsort()]

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents B x C x h x w float32, normalised unless normalize=False; labels B int64) for item indices."""
        idx = torch.as_tensor(indices).to("cpu", torch.long).view(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"latent index out of range for a dataset of {n} items "
                             f"({self.num_images} images{' x 2 flips' if self.flip else ''})")
        z, labels = self._raw(idx % n)
        z = z.float()
        return (self.normalize(z) if self.normalize_latents else z), labels

    def __getitem__(self, index) -> tuple[torch.Tensor, int]:
        """(latent C x h x w, label) of one item; items N..2N-1 are the flipped latents of 0..N-1."""
        i, n = int(index), len(self)
        if not -n <= i < n:
            raise IndexError(f"latent index {i} out of range for a dataset of {n} items")
        i %= n
        image = i % self.num_images
        if self.in_memory:
            z, label = self._latents[i], self._labels[image]
        else:  # one row of one memory-mapped shard
            shard = bisect.bisect_right(self._starts, image) - 1
            row = image - self._starts[shard]
            view = self._views[shard]
            z = view.read("latents_flip" if i >= self.num_images else "latents", slice(row, row + 1))[0]
            label = view.arrays["labels"][row]
        z = z.float()
        return ((z - self._mean_c) / self._std_c if self.normalize_latents else z), int(label)

    def labels(self) -> torch.Tensor:
        """The class label of every image (N, int64), in dataset order."""
        return self._raw(torch.arange(self.num_images))[1]
