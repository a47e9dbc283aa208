"""The lab pipeline as cached stages: tokenizer -> latent cache -> LightningDiT -> gFID, each trained or scored on a
miss and found again by its key (keys.py), or restored from the shipped pack.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .atomic import held
from .config import Config
from .errors import ConfigError
from .keys import cached_result, features_identity, save_result, stage_dir, stage_key
from .runs import finished, read_history


def _restore_or_say(config: Config, stage: str, run: Path) -> bool:
    """Restore a missing tokenizer/DiT run from the pack (True), else print that it will be trained (False)."""
    from . import pack

    key = stage_key(config, stage)
    if pack.restore(stage, key, run):
        return True
    why = f"{pack.RETRAIN_ENV} is set" if pack.retraining() else "not in the pack"
    print(f"training {stage} {key} ({why})")
    return False


def init_source(config: Config, root: str | Path | None = None) -> Path:
    """The tokenizer run config.tokenizer.init_from names: a run folder (a path), or for a preset name the cache
    folder under `root` of the stage before (presets.previous_stage), where the cached chain and the CLI put it."""
    from .presets import previous_stage

    init = config.tokenizer.init_from
    if init is None:
        raise ValueError("tokenizer.init_from is not set: the run starts from random weights")
    if "/" in init:
        return Path(init).expanduser()
    return stage_dir(previous_stage(config), "tokenizer", root)


def tokenizer_probe(config: Config):
    """The callback `train_tokenizer(..., probe=...)` takes: the tiny-DiT probe of the model in memory."""
    from .probe import run_probe

    return lambda model: run_probe(model, config)


# what a scored set of images keeps (samples, the real floor, reconstructions): FID and its other readings
SCORES = ("fid", "is", "kid", "kid_std", "precision", "recall", "class_acc")


# -- the cached chain ---------------------------------------------------------------------------------
def tokenizer(config: Config, root: str | Path | None = None):
    """(tokenizer in eval mode on CPU, history): loaded if trained before, else trained (resuming) and saved.

    With config.tokenizer.probe.every set, the tiny-DiT probe runs inside training (history["probe"]).
    """
    from .runs import load_tokenizer
    from .train.tokenizer import train_tokenizer

    run = stage_dir(config, "tokenizer", root)
    with held(run):  # a parallel job that needs the same tokenizer waits for it instead of training it too
        if not finished(run, "tokenizer") and not _restore_or_say(config, "tokenizer", run):
            train_tokenizer(config, run, resume=True,
                            probe=tokenizer_probe(config) if config.tokenizer.probe.every else None,
                            init_dir=init_source(config, root) if config.tokenizer.init_from else None)
    return load_tokenizer(run), read_history(run)


def latents(config: Config, root: str | Path | None = None, *, progress: bool = False) -> Path:
    """The latent cache folder of the config's tokenizer (extracted on a miss; resumes shard by shard)."""
    from .latents import extract_latents
    from .runs import latents_complete

    folder = stage_dir(config, "latents", root)
    tokenizer(config, root)
    with held(folder):
        if not latents_complete(folder):
            extract_latents(config, stage_dir(config, "tokenizer", root), folder, progress=progress)
    return folder


def features(config: Config, root: str | Path | None = None, *, folder: str | Path | None = None,
             progress: bool = False) -> Path:
    """REPA's VFM feature cache of the config's training images (`folder`, default under `root`); extracted on a
    miss (resuming shard by shard) in a single process; under torchrun it must exist already."""
    from . import dist
    from .build import build_repa_vfm, check_repa, train_dataset
    from .latents.features import extract_features, features_complete

    check_repa(config)
    folder = Path(folder) if folder is not None else stage_dir(config, "features", root)
    info = dist.setup(config.device)
    if info.world_size > 1 and not features_complete(folder):
        raise ConfigError(f"REPA's feature cache {folder} is not complete; make it first in one process: "
                          f"python -m vavae_lab extract-features --preset <preset> --out {folder}")
    if not features_complete(folder):
        vfm = build_repa_vfm(config, info.device)
        extract_features(vfm, train_dataset(config.data), folder, identity=features_identity(config),
                         flip=config.latents.flip, shard_size=config.latents.shard_size,
                         batch_size=config.latents.batch_size, num_workers=config.data.num_workers,
                         device=info.device, progress=progress)
    return folder


def train_dit_into(config: Config, root, run: Path, progress: bool, until: int | None = None) -> None:
    """Train (resuming) the config's DiT into `run` on its latents, and on REPA's features when dit.repa is on;
    `until`: stop after that step (train.dit.fit_dit)."""
    from .train.dit import train_dit

    feats = features(config, root, progress=progress) if config.dit.repa.weight > 0 else None
    train_dit(config, latents(config, root, progress=progress), run, resume=True, features_dir=feats, until=until)


def dit(config: Config, root: str | Path | None = None, *, progress: bool = False):
    """(DiT with EMA weights and its sampling_record, history) on the config's latents; trained on a miss."""
    from .runs import load_dit

    run = stage_dir(config, "dit", root)
    with held(run):
        if not finished(run, "dit") and not _restore_or_say(config, "dit", run):
            train_dit_into(config, root, run, progress)
    model, _ = load_dit(run)
    return model, read_history(run)


def generation(config: Config, root: str | Path | None = None, *, n: int | None = None, device=None,
               progress: bool = False) -> dict:
    """gFID, IS, KID, precision, recall and class accuracy of the config's DiT (n samples, default
    sample.num_samples), cached as JSON with the sample count, the seconds it took and the DiT's final loss."""
    n = n or config.sample.num_samples
    path, cached = cached_result(config, "generation", root, n=n)
    if cached is not None:
        return cached
    tok, _ = tokenizer(config, root)
    model, history = dit(config, root, progress=progress)
    out = evaluate_dit(config, tok, model, n=n, device=device, progress=progress)
    out["dit_loss"] = history["train"][-1]["loss"] if history["train"] else None
    return save_result(config, "generation", path, out, n=n)


def evaluate_dit(config: Config, tok, model, *, n: int, device, progress: bool) -> dict:
    """gFID, IS, precision, recall and class accuracy of n samples of a DiT (not cached), with n and the seconds."""
    from .device import resolve_device
    from .generate import dit_stats, generation_fid

    device = torch.device(device) if device is not None else resolve_device(config.device)
    t0 = time.perf_counter()
    res = generation_fid(tok.to(device), model.to(device), dit_stats(model), config, n=n, device=device,
                         progress=progress)
    out = {k: res[k] for k in SCORES if k in res}
    return {**out, "n": n, "seconds": time.perf_counter() - t0}


def held_out_images(config: Config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n held-out test images (float, [-1, 1]) and labels: what the floor and the reconstructions score."""
    from .build import held_out_dataset

    d = config.data
    if d.source != "shapes":
        raise ValueError(f"the floor and the reconstruction bound are computed for the toy shapes data, not "
                         f"data.source={d.source!r}")
    test = held_out_dataset(d, n)
    images = torch.stack([test[i][0] for i in range(len(test))])
    return images, torch.tensor([int(test[i][1]) for i in range(len(test))])


def real_floor(config: Config, root: str | Path | None = None, *, n: int | None = None, device=None) -> dict:
    """FID (and IS, KID, precision, recall, class accuracy) of n held-out real test images scored exactly like n
    generated samples: what a perfect generator would get at this sample count (n: sample.num_samples), cached."""
    from .data.images import to_uint8
    from .generate import score_images

    n = n or config.sample.num_samples
    path, cached = cached_result(config, "floor", root, n=n)
    if cached is not None:
        return cached
    images, labels = held_out_images(config, n)
    t0 = time.perf_counter()
    res = score_images(to_uint8(images), labels, config, device=device or "cpu")
    out = {k: res[k] for k in SCORES if k in res}
    out.update({"n": len(images), "seconds": time.perf_counter() - t0})
    return save_result(config, "floor", path, out, n=n)


def reconstruction(config: Config, root: str | Path | None = None, *, n: int | None = None, device=None) -> dict:
    """The tokenizer's reconstructions of the floor's n held-out images, scored exactly as n samples are: rFID (the
    gFID a perfect DiT on this tokenizer would reach), KID, precision, recall, class accuracy, PSNR, SSIM; cached."""
    from .data.images import to_uint8
    from .metrics.fid import reconstruct
    from .generate import score_images
    from .metrics.recon import psnr, ssim

    n = n or config.sample.num_samples
    path, cached = cached_result(config, "reconstruction", root, n=n)
    if cached is not None:
        return cached
    tok, _ = tokenizer(config, root)
    images, labels = held_out_images(config, n)
    t0 = time.perf_counter()
    recon = reconstruct(tok, images, device=device or "cpu")
    res = score_images(to_uint8(recon), labels, config, device=device or "cpu")
    out = {k: res[k] for k in SCORES if k in res}
    out.update({"psnr": float(psnr(recon, images).mean()), "ssim": float(ssim(recon, images).mean()),
                "n": len(images), "seconds": time.perf_counter() - t0})
    return save_result(config, "reconstruction", path, out, n=n)


def run_pipeline(config: Config, root: str | Path | None = None, *, progress: bool = False) -> dict:
    """Every stage of `config` under `root` (cached: only what is missing is trained); returns one flat dict.

    psnr, ssim, rfid (tokenizer, held-out images), gfid, is, precision, recall (samples without or with
    guidance as config.sample says), the DiT's final loss, any tokenizer probe values, and the minutes.
    """
    t0 = time.perf_counter()
    _, tok_hist = tokenizer(config, root)
    gen = generation(config, root, progress=progress)
    recon = tok_hist["eval"][-1] if tok_hist["eval"] else {}
    probe = tok_hist.get("probe", [])
    return {**{k: recon.get(k) for k in ("psnr", "ssim", "rfid")}, "gfid": gen["fid"], "is": gen["is"],
            "precision": gen["precision"], "recall": gen["recall"], "dit_loss": gen["dit_loss"],
            **({k: v for k, v in probe[-1].items() if k.startswith("probe_")} if probe else {}),
            "minutes": (time.perf_counter() - t0) / 60}
