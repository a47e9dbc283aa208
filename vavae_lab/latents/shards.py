"""Latent shards on disk: safetensors files written atomically, validated from their header, memory-mapped once."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..atomic import atomic_write

SHARD_FORMAT = "vavae_lab.latents/1"
META_FILE = "meta.json"  # a cache's record: identity, shape, classes, shards, stats; `complete` last
_NUMPY_DTYPES = {  # safetensors dtype -> (numpy dtype to map the bytes as, torch dtype to view them as)
    "F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16), "F64": (np.float64, torch.float64),
    "BF16": (np.uint16, torch.bfloat16), "I64": (np.int64, torch.int64), "I32": (np.int32, torch.int32),
    "U8": (np.uint8, torch.uint8),
}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors limit; a larger value means the file is not a shard


def read_meta(out_dir: str | Path) -> dict | None:
    """The meta.json of a latent cache, or None if there is none."""
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # an interrupted write of the in-progress marker; it is rewritten


def shard_name(index: int) -> str:
    """The file name of shard `index`: shard_00000.safetensors, shard_00001.safetensors, ..."""
    return f"shard_{index:05d}.safetensors"


def shard_ranges(num_items: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) dataset indices of every shard, in dataset order (the last shard may be shorter)."""
    return [(start, min(start + shard_size, num_items)) for start in range(0, num_items, shard_size)]


def write_shard(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Save tensors as safetensors to a temporary file in the same folder, fsync, then rename over `path`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_header(path: str | Path) -> tuple[dict, int]:
    """(header dict, byte offset of the data) of a safetensors file; ValueError if it is truncated or not one."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(_MAX_HEADER, size - 8):
            raise ValueError(f"{path} announces a {length}-byte header but holds {size} bytes")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} has an unreadable safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a safetensors header that is not a mapping")
    start = 8 + length
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if start + end != size:
        raise ValueError(f"{path} should hold {start + end} bytes according to its header but holds {size} "
                         "(an interrupted copy?)")
    return header, start


def shard_problem(path: str | Path, *, start: int, count: int, latent_shape: tuple[int, ...] | None,
                  flip: bool) -> str | None:
    """Why the shard at `path` is not a complete shard of items [start, start + count) (None if it is)."""
    path = Path(path)
    if not path.is_file():
        return "it does not exist"
    try:
        header, _ = read_header(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"it cannot be read ({exc})"
    meta = header.get("__metadata__") or {}
    if meta.get("format") != SHARD_FORMAT:
        return f"its format is {meta.get('format')!r}, not {SHARD_FORMAT!r}"
    if meta.get("start") != str(start):
        return f"it starts at item {meta.get('start')}, not {start}"
    keys = ["latents", "labels"] + (["latents_flip"] if flip else [])
    for key in keys:
        if key not in header:
            return f"it has no {key!r} tensor"
    if header["labels"]["shape"] != [count]:
        return f"it holds {header['labels']['shape']} labels, not [{count}]"
    for key in keys[:1] + keys[2:]:
        shape = header[key]["shape"]
        want = [count, *latent_shape] if latent_shape is not None else None
        if len(shape) != 4 or shape[0] != count or (want is not None and shape != want):
            return f"its {key!r} tensor has shape {shape}, expected {want or [count, 'C', 'h', 'w']}"
    return None


class ShardView:
    """Zero-copy numpy memory maps of one shard's tensors, opened once (re-opened after pickling)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._open()

    def _open(self) -> None:
        header, data_start = read_header(self.path)
        self.metadata: dict = header.get("__metadata__") or {}
        self.arrays: dict[str, np.memmap] = {}
        self.torch_dtypes: dict[str, torch.dtype] = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in _NUMPY_DTYPES:
                raise ValueError(f"{self.path}: tensor {key!r} has unsupported dtype {info['dtype']}")
            np_dtype, torch_dtype = _NUMPY_DTYPES[info["dtype"]]
            begin, _ = info["data_offsets"]
            self.arrays[key] = np.memmap(self.path, dtype=np_dtype, mode="r", offset=data_start + begin,
                                         shape=tuple(info["shape"]))
            self.torch_dtypes[key] = torch_dtype

    def __len__(self) -> int:
        return int(self.arrays["labels"].shape[0])

    def nbytes(self, key: str) -> int:
        """Bytes on disk of one tensor."""
        return int(self.arrays[key].nbytes)

    def read(self, key: str, rows=None) -> torch.Tensor:
        """A fresh torch tensor of the whole tensor `key`, or of the given rows (a slice or sorted int array)."""
        array = self.arrays[key] if rows is None else self.arrays[key][rows]
        out = torch.from_numpy(np.array(array, copy=True))
        return out.view(self.torch_dtypes[key]) if out.dtype != self.torch_dtypes[key] else out

    def __getstate__(self) -> dict:
        return {"path": self.path}  # memory maps are re-opened in DataLoader workers, never pickled

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._open()


def gather_rows(views: list[ShardView], ranges: list[tuple[int, int]], indices: torch.Tensor,
                key: str = "latents") -> torch.Tensor:
    """Rows `indices` (sorted, global item indices) of tensor `key`, read from the shards that hold them."""
    starts = torch.tensor([a for a, _ in ranges])
    shard_of = torch.searchsorted(starts, indices, right=True) - 1
    parts = []
    for s in shard_of.unique().tolist():
        local = (indices[shard_of == s] - ranges[s][0]).numpy()
        parts.append(views[s].read(key, local))
    return torch.cat(parts)


def ordered_batches(dataset, start: int, stop: int, batch_size: int, num_workers: int = 0):
    """(images, labels) batches of dataset items [start, stop) in order: tensor indexing when the dataset has
    get_batch (in memory), else a DataLoader."""
    if hasattr(dataset, "get_batch"):
        for i in range(start, stop, batch_size):
            yield dataset.get_batch(torch.arange(i, min(i + batch_size, stop)))
        return
    subset = torch.utils.data.Subset(dataset, range(start, stop))
    yield from torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def gather_items(views: list[ShardView], ranges: list[tuple[int, int]], num_images: int, indices: torch.Tensor,
                 key: str, flip_key: str) -> torch.Tensor:
    """Rows of `key` for item indices in [0, 2 * num_images), in the order given: item N + i is row i of `flip_key`."""
    image, flipped = indices % num_images, indices >= num_images
    order = image.argsort()
    out = gather_rows(views, ranges, image[order], key)
    if bool(flipped.any()):
        out[flipped[order]] = gather_rows(views, ranges, image[order][flipped[order]], flip_key)
    return out[order.argsort()]
