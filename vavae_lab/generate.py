"""From (tokenizer, DiT) to images and to gFID in one call: class-balanced sampling, decoding, evaluation.

Sample i of a run is fixed by (sample.seed, i): its label is i mod K and its starting noise comes from a
generator seeded by a hash of both. Batches cover [0, N) in fixed global steps of sample.batch_size, so a
torchrun job that splits them over ranks writes the same images as one process.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .atomic import atomic_write_json
from .config import Config, SampleConfig
from .errors import ConfigError, DataError

MANIFEST_NAME = "sampling.json"


def class_balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ... (n labels): every class equally often, up to one."""
    return torch.arange(n) % num_classes


def sample_seed(seed: int, index: int, stream: str = "noise") -> int:
    """A 63-bit seed for sample (or batch) `index` of a run with `seed`: a hash, so nearby seeds do not overlap."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)


def initial_noise(indices, latent_shape, seed: int) -> torch.Tensor:
    """Starting noise (len(indices) x C x h x w) of the samples with these global indices, one generator each."""
    g = torch.Generator()
    return torch.stack([torch.randn(tuple(latent_shape), generator=g.manual_seed(sample_seed(seed, int(i))))
                        for i in indices])


def global_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The (start, stop) index ranges of the batches of a run: [0, b), [b, 2b), ..., the same on every rank."""
    if batch_size < 1:
        raise ConfigError(f"sample.batch_size={batch_size}; it must be >= 1")
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def rank_share(items: list, rank: int, world_size: int) -> list:
    """Rank `rank`'s contiguous slice of `items`; the slices of all ranks tile it, sizes differing by at most one."""
    return items[len(items) * rank // world_size:len(items) * (rank + 1) // world_size]


def rank_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[tuple[int, int]]:
    """Rank `rank`'s share of a fresh run's global_batches: a contiguous run of whole batches."""
    return rank_share(global_batches(n, batch_size), rank, world_size)


def check_sampler(sample: SampleConfig, path: str) -> None:
    """ConfigError if sample.sampler cannot sample a DiT trained with transport path `path`."""
    if sample.sampler == "ddpm" and path != "ddpm":
        raise ConfigError("sample.sampler=ddpm needs a DiT trained with dit.transport.path=ddpm")


@torch.no_grad()
def sample_latents(dit, labels: torch.Tensor, latent_shape, sample: SampleConfig, *, path: str = "rectified_flow",
                   ddpm_steps: int = 1000, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu", noise: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised latents for `labels` from `noise` (default: drawn with `generator`) with sampler, CFG and shift."""
    from .diffusion.samplers import cfg_velocity, sample_ddpm, sample_ode

    device = torch.device(device)
    if noise is None:
        noise = torch.randn((len(labels), *latent_shape), generator=generator)
    noise = noise.to(device)
    y = labels.to(device)
    null_class = dit.num_classes if hasattr(dit, "num_classes") else None
    if null_class is None:
        raise ConfigError("the DiT model does not expose num_classes (needed for the CFG null class)")
    guided = cfg_velocity(dit, y, scale=sample.cfg_scale, interval_start=sample.cfg_interval_start,
                          channels=sample.cfg_channels, null_class=null_class)
    if path == "ddpm" or sample.sampler == "ddpm":
        check_sampler(sample, path)
        return sample_ddpm(guided, noise, num_steps=ddpm_steps, sample_steps=sample.steps, generator=generator)
    return sample_ode(guided, noise, method=sample.sampler, steps=sample.steps, shift=sample.timestep_shift,
                      atol=sample.atol, rtol=sample.rtol, max_nfe=sample.max_nfe)


@torch.no_grad()
def iter_sample_batches(tokenizer, dit, stats, config: Config, batches, *, n: int, num_classes: int, latent_shape,
                        device: torch.device | str = "cpu",
                        progress: bool = True) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield (start, uint8 images, labels) for each (start, stop) in `batches` of a run of n samples."""
    from .latents import denormalize
    from .metrics.fid import to_uint8

    s = config.sample
    labels = class_balanced_labels(n, num_classes)
    for start, stop in tqdm(batches, desc="sampling", disable=not progress):
        y = labels[start:stop]
        noise = initial_noise(range(start, stop), latent_shape, s.seed)
        g = torch.Generator().manual_seed(sample_seed(s.seed, start, "ddpm"))  # DDPM's per-step noise
        z = sample_latents(dit, y, latent_shape, s, path=config.dit.transport.path,
                           ddpm_steps=config.dit.transport.ddpm_steps, generator=g, device=device, noise=noise)
        yield start, to_uint8(tokenizer.decode(denormalize(z, *stats))).cpu(), y


@torch.no_grad()
def generate_images(tokenizer, dit, stats, config: Config, *, n: int | None = None, num_classes: int | None = None,
                    latent_shape=None, device: torch.device | str = "cpu", progress: bool = True,
                    force: bool = False):
    """(uint8 images N x 3 x H x W, labels): sample latents, de-normalise with `stats` = (mean, std), decode.

    `stats=None` takes the ones recorded with a DiT from `load_dit`. Such a DiT also knows its tokenizer's
    weights: another tokenizer is refused (CheckpointError) unless force=True.
    """
    s = config.sample
    n = n or s.num_samples
    num_classes = num_classes or dit.num_classes
    check_pair(tokenizer, dit, force=force)
    stats = dit_stats(dit) if stats is None else stats
    latent_shape = latent_shape or (dit.in_channels, dit.input_size, dit.input_size)
    dit, tokenizer = dit.to(device).eval(), tokenizer.to(device).eval()
    parts = [images for _, images, _ in iter_sample_batches(
        tokenizer, dit, stats, config, global_batches(n, s.batch_size), n=n, num_classes=num_classes,
        latent_shape=latent_shape, device=device, progress=progress)]
    return torch.cat(parts), class_balanced_labels(n, num_classes)


def _source(model_or_folder) -> str:
    """How a sampling manifest names a model: its run folder's absolute path, or its weights' sha256."""
    if isinstance(model_or_folder, torch.nn.Module):
        from .latents.cache import weights_fingerprint

        return f"sha256:{weights_fingerprint(model_or_folder)}"
    return str(Path(model_or_folder).expanduser().resolve())


def dit_stats(dit) -> tuple[torch.Tensor, torch.Tensor]:
    """The (mean, std) of the latents a DiT was trained on (recorded in its dit.pt; `runs.load_dit` reads it)."""
    from .errors import CheckpointError

    record = getattr(dit, "sampling_record", None)
    if record is None:
        raise ConfigError("this DiT was not loaded with vavae_lab.load_dit, so its latent statistics are unknown; "
                          "pass stats=(mean, std) of the latents it was trained on")
    if record.get("latent_mean") is None:
        raise CheckpointError(record.get("missing", "the DiT file holds no latent statistics"))
    return record["latent_mean"], record["latent_std"]


def check_pair(tokenizer, dit, *, dit_name: str = "the DiT", tokenizer_name: str = "the tokenizer passed",
               force: bool = False, force_hint: str = "force=True") -> None:
    """CheckpointError unless `tokenizer` makes the latents `dit` was trained on: channels, then weights sha256."""
    from .errors import CheckpointError
    from .latents.cache import weights_fingerprint

    record = getattr(dit, "sampling_record", None) or {}
    channels = getattr(tokenizer, "latent_channels", None)
    if channels is not None and channels != dit.in_channels:
        raise CheckpointError(f"{tokenizer_name} makes {channels}-channel latents but {dit_name} was trained on "
                              f"{dit.in_channels}-channel ones; pass the tokenizer whose latents it was trained on"
                              + (f" ({record['tokenizer_dir']})" if record.get("tokenizer_dir") else ""))
    expected = record.get("tokenizer_sha256")
    if expected is None or force:
        return
    actual = weights_fingerprint(tokenizer)
    if actual != expected:
        trained = f" in {record['tokenizer_dir']}" if record.get("tokenizer_dir") else ""
        raise CheckpointError(f"{tokenizer_name} (weights sha256 {actual[:12]}) is not the tokenizer {dit_name} was "
                              f"trained for (sha256 {expected[:12]}{trained}), so it would decode noise; pass that "
                              f"tokenizer, or add {force_hint} if the swap is deliberate")


def _manifest(config: Config, dit_dir, tokenizer_dir, num_classes: int, latent_shape) -> dict:
    """Everything besides num_samples that fixes sample i's pixels; a resumed run must match it."""
    s = config.sample
    record = {"seed": s.seed, "sampler": s.sampler, "steps": s.steps, "cfg_scale": s.cfg_scale,
              "cfg_interval_start": s.cfg_interval_start, "cfg_channels": s.cfg_channels,
              "timestep_shift": s.timestep_shift, "atol": s.atol, "rtol": s.rtol,
              "transport_path": config.dit.transport.path, "num_classes": int(num_classes),
              "latent_shape": [int(v) for v in latent_shape], "dit": _source(dit_dir),
              "tokenizer": _source(tokenizer_dir)}
    if s.sampler == "ddpm":  # its per-step noise is drawn per batch
        record.update(batch_size=s.batch_size, ddpm_steps=config.dit.transport.ddpm_steps)
    return record


def _check_folder(out: Path, manifest: dict, names: list[str]) -> None:
    """DataError unless `out` is absent, empty, or a partial run with the same manifest and only its own PNGs."""
    from .metrics.samples_io import sample_files

    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; sample --out needs a folder path")
    record = out / MANIFEST_NAME
    existing = sample_files(out, must_exist=False)
    if record.is_file():
        try:
            old = json.loads(record.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{record} is not readable JSON ({exc}); delete it and the folder's PNGs") from exc
        changed = sorted(k for k in manifest.keys() | old.keys() if manifest.get(k) != old.get(k))
        if changed and existing:  # with no PNG yet nothing is lost: the new manifest replaces it
            diff = "; ".join(f"{k}: {old.get(k)!r} -> {manifest.get(k)!r}" for k in changed)
            raise DataError(f"{out} holds samples of a different sampling run ({diff}); choose another --out, or "
                            f"delete {record} if only the run folders moved")
    elif existing:
        raise DataError(f"{out} already holds {len(existing)} PNGs (e.g. {existing[0].name}) but no {MANIFEST_NAME}, "
                        "so they cannot be resumed; choose an empty folder or delete them")
    expected = set(names)
    foreign = [p.name for p in existing if p.name not in expected]
    if foreign:
        raise DataError(f"{out} holds {len(foreign)} PNGs that are not samples 0..{len(names) - 1} of this run (e.g. "
                        f"{foreign[0]}; a larger --n / sample.num_samples before?); move them or choose another --out")


def _read_manifest(out: Path) -> dict | None:
    """The folder's sampling.json, or None when absent or unreadable."""
    try:
        return json.loads((out / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _finish_folder(out: Path, labels: torch.Tensor, names: list[str]) -> None:
    """Write labels.json and a class-sorted grid.png from the finished folder's PNGs (rank 0)."""
    from .metrics.samples_io import GRID_NAME, grid_indices, read_image_uint8, save_grid, write_labels_file

    label_list = labels.tolist()
    chosen, nrow = grid_indices(label_list, len(label_list))
    images = torch.stack([read_image_uint8(out / names[i]) for i in chosen])
    save_grid(images, [label_list[i] for i in chosen], out / GRID_NAME, nrow=nrow)
    write_labels_file(out, labels, images.shape[2], images.shape[3])


def sample_to_folder(config: Config, dit_dir, tokenizer_dir, out_dir, *, npz=None, progress: bool = True,
                     force: bool = False, force_hint: str = "force=True") -> Path:
    """Write config.sample.num_samples class-balanced PNGs plus grid.png; torchrun-aware and resumable.

    `dit_dir` and `tokenizer_dir` are run folders or models (a DiT model needs the `sampling_record` that
    `vavae_lab.runs.load_dit` or training gives it, else `stats` are unknown).

    Under torchrun each rank samples a contiguous run of the global batches still missing (rank_share) and
    names PNGs by global index, so any number of ranks writes the same files; PNGs already present are kept,
    so an interrupted run continues, with any world size. Rank 0 writes labels.json and grid.png once all
    ranks are done, and with `npz` (True for folder/samples_NxHxWx3.npz, or a path) packs the folder for
    ADM's evaluator. A tokenizer other than the one the DiT was trained for is refused before anything is
    written, unless `force` (the weights' sha256 is compared; another latent shape is always refused).
    """
    from . import dist
    from .metrics.samples_io import LABELS_NAME, folder_to_npz, sample_file_name, save_sample

    info = dist.setup(config.device)
    s = config.sample
    check_sampler(s, config.dit.transport.path)
    from .runs import as_dit, as_tokenizer

    dit, tokenizer = as_dit(dit_dir, device=info.device), as_tokenizer(tokenizer_dir, device=info.device)
    dit_name = "the DiT" if isinstance(dit_dir, torch.nn.Module) else f"the DiT in {dit_dir}"
    tokenizer_name = ("the tokenizer passed" if isinstance(tokenizer_dir, torch.nn.Module)
                      else f"the tokenizer in {tokenizer_dir}")
    check_pair(tokenizer, dit, dit_name=dit_name, tokenizer_name=tokenizer_name, force=force, force_hint=force_hint)
    stats = dit_stats(dit)
    shape = (dit.in_channels, dit.input_size, dit.input_size)
    n, num_classes = s.num_samples, dit.num_classes
    labels = class_balanced_labels(n, num_classes)
    names = [sample_file_name(i, int(c)) for i, c in enumerate(labels)]
    out = Path(out_dir).expanduser()
    manifest = _manifest(config, dit_dir, tokenizer_dir, num_classes, shape)
    _check_folder(out, manifest, names)
    out.mkdir(parents=True, exist_ok=True)
    if _read_manifest(out) != manifest:  # every rank: none writes a PNG before the manifest exists
        atomic_write_json(out / MANIFEST_NAME, manifest)  # new, or a failed run's that wrote no PNG yet
    if info.is_main:
        (out / LABELS_NAME).unlink(missing_ok=True)  # rewritten when the folder is complete
    dist.barrier()  # all ranks list the missing batches from the same files, then share them out
    todo = [(a, b) for a, b in global_batches(n, s.batch_size)
            if not all((out / names[i]).is_file() for i in range(a, b))]
    dist.barrier()
    todo = rank_share(todo, info.rank, info.world_size)
    dit, tokenizer = dit.eval(), tokenizer.eval()
    for start, images, y in iter_sample_batches(tokenizer, dit, stats, config, todo, n=n, num_classes=num_classes,
                                                latent_shape=shape, device=info.device,
                                                progress=progress and info.is_main):
        for j, image in enumerate(images):
            if not (out / names[start + j]).is_file():
                save_sample(image, out, start + j, int(y[j]))
    dist.barrier()
    if info.is_main:
        _finish_folder(out, labels, names)
        if npz:
            print(f"packed {folder_to_npz(out, None if npz is True else npz)}")
    return out


def generation_fid(tokenizer, dit, stats, config: Config, *, n: int | None = None, device="cpu",
                   progress: bool = True, kid: bool = True) -> dict:
    """gFID (plus IS, KID unless kid=False, precision, recall) of n class-balanced samples against the config's data.

    On the toy shapes data also `class_acc`: the share of samples the toy FID network (a classifier) assigns to the
    class they were generated for (chance 1 / num_classes)."""
    shape = (dit.in_channels, dit.input_size, dit.input_size)
    images, labels = generate_images(tokenizer, dit, stats, config, n=n, latent_shape=shape, device=device,
                                     progress=progress)
    return score_images(images, labels, config, device=device, kid=kid)


def score_images(images: torch.Tensor, labels: torch.Tensor | None, config: Config, *, device="cpu",
                 kid: bool = True, progress: bool = False) -> dict:
    """The one protocol for every set of toy images, samples and reconstructions alike: `evaluate_samples` against
    the data's reference (FID, IS, KID, precision, recall) and, on shapes with labels, `class_acc`: the share the
    toy network puts in the class they stand for (the class asked for, or the class of the image reconstructed)."""
    from .build import sample_scoring
    from .metrics.generation import evaluate_samples
    from .metrics.toy_features import evaluate_accuracy, get_toy_feature_net

    scoring = sample_scoring(config)
    result = evaluate_samples(images, **scoring, device=device, kid=kid, progress=progress)
    if config.data.source == "shapes" and labels is not None:
        net = get_toy_feature_net(scoring["toy_config"], device="cpu", progress=False)
        result["class_acc"] = evaluate_accuracy(net, images.cpu(), labels.cpu())
    return result
