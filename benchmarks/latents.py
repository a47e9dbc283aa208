"""Latent loading speed (items/s): LatentDataset (tensor indexing) versus opening the shard per item (upstream).

Builds a synthetic cache of random latents in a temporary folder (same files as `extract_latents` writes:
shards with `latents`, `latents_flip`, `labels`, stats.safetensors and meta.json), then times
random batches of 256 through each loader on one CPU thread.

    python benchmarks/latents.py                               # 50k latents of 8 x 8 x 8, shards of 10k
    python benchmarks/latents.py --num 50000 --shape 32 16 16  # the ImageNet f16d32 latent size
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from vavae_lab.latents import LatentDataset, channel_stats, shard_name, shard_ranges
from vavae_lab.latents.shards import SHARD_FORMAT, write_shard
from vavae_lab.latents.stats import STATS_FILE, save_stats

BATCH = 256


def build_cache(folder: Path, num: int, shape: tuple[int, int, int], shard_size: int, classes: int = 1000) -> None:
    """Write a complete synthetic latent cache: per-channel offsets and scales, so normalising matters."""
    g = torch.Generator().manual_seed(0)
    offset = torch.randn(1, shape[0], 1, 1, generator=g) * 2
    scale = torch.rand(1, shape[0], 1, 1, generator=g) * 3 + 0.5
    ranges = shard_ranges(num, shard_size)
    first = None
    for i, (a, b) in enumerate(ranges):
        tensors = {"latents": torch.randn(b - a, *shape, generator=g) * scale + offset,
                   "latents_flip": torch.randn(b - a, *shape, generator=g) * scale + offset,
                   "labels": torch.randint(0, classes, (b - a,), generator=g)}
        write_shard(folder / shard_name(i), tensors, {"format": SHARD_FORMAT, "start": str(a), "count": str(b - a)})
        first = tensors["latents"] if first is None else first
    mean, std = channel_stats(lambda idx: first[idx], torch.arange(first.shape[0]))
    save_stats(folder / STATS_FILE, mean, std, first.shape[0])
    meta = {"format": SHARD_FORMAT, "num_images": num, "num_classes": classes, "latent_shape": list(shape),
            "flip": True, "shards": [shard_name(i) for i in range(len(ranges))],
            "stats": {"file": STATS_FILE, "count": first.shape[0]}, "complete": True}
    (folder / "meta.json").write_text(json.dumps(meta))


class NaiveLatents(torch.utils.data.Dataset):
    """The upstream pattern: a map from item to (file, row), and safe_open of that file on every access."""

    def __init__(self, folder: Path):
        meta = json.loads((folder / "meta.json").read_text())
        self.items: list[tuple[str, int]] = []
        for name in meta["shards"]:
            with safe_open(str(folder / name), framework="pt") as fh:
                count = fh.get_slice("labels").get_shape()[0]
            self.items += [(str(folder / name), row) for row in range(count)]
        with safe_open(str(folder / STATS_FILE), framework="pt") as fh:
            self.mean, self.std = fh.get_tensor("mean"), fh.get_tensor("std")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, row = self.items[index]
        with safe_open(path, framework="pt") as fh:
            key = "latents" if np.random.uniform() > 0.5 else "latents_flip"
            z = fh.get_slice(key)[row:row + 1]
            label = fh.get_slice("labels")[row:row + 1]
        return ((z - self.mean) / self.std)[0], label[0]


def _rate(next_batch, seconds: float) -> float:
    """Items per second of `next_batch()` (returns a batch), timed for about `seconds` after one warm-up."""
    next_batch()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += next_batch()[0].shape[0]
    return count / (time.perf_counter() - start)


def _loader_batches(dataset, seed: int):
    """A function returning the next batch of a shuffled DataLoader (batch 256, no workers), forever."""
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=g)
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return next_batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=50_000, help="latents in the synthetic cache")
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 8, 8], metavar=("C", "H", "W"))
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build_cache(folder, args.num, shape, args.shard_size)
        mb = sum(p.stat().st_size for p in folder.iterdir()) / 2 ** 20
        print(f"synthetic cache: {args.num} latents of {'x'.join(map(str, shape))} (+ flips), "
              f"{mb:.0f} MiB, shards of {args.shard_size}, built in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        ram = LatentDataset(folder, in_memory=True)
        t_ram = time.perf_counter() - t0
        t0 = time.perf_counter()
        mapped = LatentDataset(folder, in_memory=False)
        t_map = time.perf_counter() - t0
        naive = NaiveLatents(folder)
        g = torch.Generator().manual_seed(1)

        def batch_of(ds):
            return lambda: ds.get_batch(torch.randint(0, len(ds), (BATCH,), generator=g))

        rows = [
            (f"LatentDataset.get_batch, in RAM (load {t_ram:.1f} s)", _rate(batch_of(ram), args.seconds)),
            (f"LatentDataset.get_batch, memory-mapped (load {t_map:.1f} s)", _rate(batch_of(mapped), args.seconds)),
            ("LatentDataset[i] via DataLoader(batch 256), in RAM", _rate(_loader_batches(ram, 2), args.seconds)),
            ("LatentDataset[i] via DataLoader(batch 256), mapped", _rate(_loader_batches(mapped, 3), args.seconds)),
            ("naive: safe_open per item via DataLoader (upstream)", _rate(_loader_batches(naive, 4), args.seconds)),
        ]
    base = rows[-1][1]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'loader'.ljust(width)}  {'items/s':>12}  {'vs naive':>9}")
    for name, rate in rows:
        print(f"{name.ljust(width)}  {rate:12,.0f}  {rate / base:8.1f}x")


if __name__ == "__main__":
    main()
