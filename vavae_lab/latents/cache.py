"""Encode the training set once into resumable safetensors shards (with flips), plus stats and meta.json."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import dist
from ..atomic import atomic_write_json
from ..config import Config, to_dict
from ..build import train_dataset
from ..errors import ConfigError
from ..paths import config_hash
from ..runs import as_tokenizer
from .shards import (META_FILE, SHARD_FORMAT, ShardView, gather_rows, ordered_batches, read_meta, shard_name,
                     shard_problem, shard_ranges, write_shard)
from .stats import STATS_FILE, channel_stats, save_stats, stats_subset

LATENT_DTYPE = torch.float32  # bf16 would halve the disk, but toy latents are small and fp32 keeps stats exact


def encode_batch(model, images: torch.Tensor, *, sample_posterior: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (B x C x h x w, float32, on CPU) of images in [-1, 1]: the posterior mode, or a sample."""
    posterior = model.encode(images)
    z = posterior.sample(generator) if sample_posterior else posterior.mode()
    return z.to("cpu", LATENT_DTYPE)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A sha256 of every parameter and buffer (names and bytes), identifying the tokenizer's weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous().view(-1)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _identity(config: Config, model, fingerprint: str) -> dict:
    """Everything that changes the shards' contents; a cache made under another identity is never mixed in."""
    data = to_dict(config.data)
    for key in ("num_workers", "hflip", "crop"):  # loader speed and train-time augmentation change no latent
        data.pop(key)
    latents = {k: v for k, v in to_dict(config.latents).items() if k not in ("stats_count", "batch_size")}
    return {"format": SHARD_FORMAT, "tokenizer_weights_sha256": fingerprint,
            "tokenizer_arch": json.loads(json.dumps(model.config)), "data": data, "latents": latents,
            "seed": config.seed if config.latents.sample_posterior else None}  # the seed only draws posterior noise


def _write_meta(out_dir: Path, meta: dict) -> None:
    """Write meta.json atomically (temp file in the same folder, then rename)."""
    atomic_write_json(out_dir / META_FILE, meta, indent=2)


def _check_identity(out_dir: Path, identity: dict) -> None:
    """Refuse to resume a folder that holds latents made by another tokenizer or config."""
    old = read_meta(out_dir)
    if old is None or old.get("identity") == identity:
        return
    before = old.get("identity") or {}
    changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
    raise ConfigError(f"{out_dir} already holds latents made with a different {', '.join(changed)}; "
                      "pass another --out folder, or delete this one to re-extract from scratch")


def _encode_shard(model, dataset, start: int, stop: int, config: Config, device: torch.device,
                  shard: int, bar) -> dict[str, torch.Tensor]:
    """Latents, flipped latents and labels of dataset items [start, stop), in index order."""
    lc = config.latents
    generator = None
    if lc.sample_posterior:  # a fixed noise stream per shard: re-running a shard gives the same bits
        generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + shard)
    outs: dict[str, list[torch.Tensor]] = {"latents": [], "latents_flip": [], "labels": []}
    for images, labels in ordered_batches(dataset, start, stop, lc.batch_size, config.data.num_workers):
        images = images.to(device)
        outs["latents"].append(encode_batch(model, images, sample_posterior=lc.sample_posterior,
                                            generator=generator))
        if lc.flip:
            outs["latents_flip"].append(encode_batch(model, images.flip(-1), sample_posterior=lc.sample_posterior,
                                                     generator=generator))
        outs["labels"].append(torch.as_tensor(labels, dtype=torch.int64))
        bar.update(len(images))
    return {k: torch.cat(v) for k, v in outs.items() if v}


def extract_latents(config: Config, tokenizer, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Encode config.data's training set with `tokenizer` (a model, or a run folder) into a latent cache at `out_dir`.

    Writes shard_00000.safetensors, ... (`latents`, `latents_flip` when config.latents.flip, both N x C x h x w
    float32, and int64 `labels`, in dataset order), stats.safetensors (per-channel `mean` and `std`,
    1 x C x 1 x 1, on up to config.latents.stats_count unflipped latents) and meta.json, whose last key
    `complete` turns true at the very end. Resumable: complete shards are kept, missing or corrupt ones are
    re-encoded. Under torchrun, rank r encodes shards r, r + W, ... and rank 0 writes the stats and meta.
    A model passed in is used as it is (moved to the device, in eval mode while encoding, then put back).
    """
    info = dist.setup(config.device)
    out_dir = Path(out_dir)
    model = as_tokenizer(tokenizer, device=info.device)
    was_training = model.training
    model.eval()
    try:
        return _extract(config, model, tokenizer, out_dir, info, progress)
    finally:
        model.train(was_training)


def _extract(config: Config, model, tokenizer, out_dir: Path, info, progress: bool) -> Path:
    """extract_latents with the tokenizer model in hand (`tokenizer` is what the caller passed)."""
    tokenizer_dir = None if isinstance(tokenizer, torch.nn.Module) else str(Path(tokenizer).resolve())
    d = config.data
    if d.source == "imagefolder" and not d.root:
        raise ConfigError("data.source=imagefolder needs data.root=/path/to/imagenet/train "
                          "(a folder of class sub-folders)")
    dataset = train_dataset(d)  # centre-cropped whatever data.crop says
    num_items, lc = len(dataset), config.latents
    if lc.shard_size < 1 or lc.batch_size < 1 or lc.stats_count < 1:
        raise ConfigError(f"latents.shard_size={lc.shard_size}, latents.batch_size={lc.batch_size} and "
                          f"latents.stats_count={lc.stats_count} must all be positive")
    f = model.downsample_factor
    latent_shape = (model.latent_channels, d.resolution // f, d.resolution // f)
    identity = _identity(config, model, weights_fingerprint(model))
    ranges = shard_ranges(num_items, lc.shard_size)

    old = read_meta(out_dir)
    if (old is not None and old.get("complete") and old.get("identity") == identity
            and old.get("stats", {}).get("requested") == lc.stats_count and all(
                shard_problem(out_dir / shard_name(i), start=a, count=b - a, latent_shape=latent_shape,
                              flip=lc.flip) is None for i, (a, b) in enumerate(ranges))):
        return out_dir  # nothing to do
    _check_identity(out_dir, identity)  # every rank checks before anyone writes
    dist.barrier()
    meta = {"format": SHARD_FORMAT, "identity": identity, "tokenizer_dir": tokenizer_dir,
            "tokenizer_config_hash": config_hash(identity["tokenizer_arch"]), "data": to_dict(d),
            "latents": to_dict(lc), "num_images": num_items, "num_classes": int(dataset.num_classes),
            "latent_shape": list(latent_shape), "dtype": str(LATENT_DTYPE).replace("torch.", ""), "flip": lc.flip,
            "shards": [shard_name(i) for i in range(len(ranges))], "complete": False}
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_meta(out_dir, meta)
    dist.barrier()

    mine = [i for i in range(len(ranges)) if i % info.world_size == info.rank]
    todo = [i for i in mine if shard_problem(out_dir / shard_name(i), start=ranges[i][0],
                                            count=ranges[i][1] - ranges[i][0], latent_shape=latent_shape,
                                            flip=lc.flip) is not None]
    bar = tqdm(total=sum(ranges[i][1] - ranges[i][0] for i in todo), desc="extract-latents", unit="img",
               disable=not (progress and info.is_main), dynamic_ncols=True)
    with torch.no_grad():
        for i in todo:
            start, stop = ranges[i]
            tensors = _encode_shard(model, dataset, start, stop, config, info.device, i, bar)
            if tensors["labels"].shape[0] != stop - start:
                raise RuntimeError(f"shard {i} encoded {tensors['labels'].shape[0]} items, expected {stop - start}")
            write_shard(out_dir / shard_name(i), tensors,
                        {"format": SHARD_FORMAT, "start": str(start), "count": str(stop - start)})
    bar.close()
    dist.barrier()

    if info.is_main:
        for i, (start, stop) in enumerate(ranges):
            problem = shard_problem(out_dir / shard_name(i), start=start, count=stop - start,
                                    latent_shape=latent_shape, flip=lc.flip)
            if problem is not None:
                raise RuntimeError(f"{out_dir / shard_name(i)} is not complete after extraction: {problem}")
        views = [ShardView(out_dir / shard_name(i)) for i in range(len(ranges))]
        subset = stats_subset(num_items, lc.stats_count, d.seed)
        mean, std = channel_stats(lambda idx: gather_rows(views, ranges, idx), subset)
        save_stats(out_dir / STATS_FILE, mean, std, subset.numel())
        meta.pop("complete")
        meta["stats"] = {"file": STATS_FILE, "count": int(subset.numel()), "requested": lc.stats_count,
                         "seed": d.seed, "unbiased_std": True}
        meta["complete"] = True  # the marker, last: a cache without it is still being written
        _write_meta(out_dir, meta)
    dist.barrier()
    return out_dir

