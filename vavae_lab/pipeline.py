"""The lab pipeline as cached stages: tokenizer -> latent cache -> LightningDiT -> gFID, one key per stage.

`stage_key(config, stage)` is the one rule for which config fields a stage's result depends on: each
stage hashes exactly its own sections (STAGES) chained with the key of the stage it consumes, minus the
fields that change speed or display but no result (IGNORED). The study, the benchmarks and the command
line's defaults all key and chain runs through here, so a run any of them trained is found by the others.

    root/tokenizers/<key>/   tokenizer.pt, history.json, config.yaml, checkpoints
    root/latents/<key>/      shards, stats.safetensors, meta.json
    root/dits/<key>/         dit.pt (self-contained: latent shape, classes, mean/std, tokenizer sha256)
    root/dits/<key>/snapshots/   EMA weights after the steps of dit.snapshots (a convergence curve)
    root/results/<key>.json  a gFID evaluation (of a snapshot: keyed by the DiT key, the step and n)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import Config, to_dict
from .errors import CheckpointError, ConfigError
from .paths import cache_dir, config_hash
from .runs import finished, read_history

# stage -> (the stage it consumes, the config sections it reads); "seed" is the top-level seed
STAGES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "tokenizer": (None, ("seed", "data", "tokenizer", "metrics")),
    "latents": ("tokenizer", ("latents",)),
    "features": (None, ("data",)),  # REPA's VFM features of the training images, plus the VFM and the token grid
    "dit": ("latents", ("dit", "seed")),
    "generation": ("dit", ("sample", "metrics")),  # plus the number of samples n
    # analyses of a stage's output
    "uniformity": ("latents", ()),  # plus the number of vectors n and of t-SNE runs
    "probe": ("tokenizer", ()),  # plus the probe settings
    "floor": (None, ("data", "metrics")),  # real-vs-real FID, plus the number of images n
    "reconstruction": ("tokenizer", ()),  # the tokenizer's reconstructions scored as samples, plus n
}
# dotted fields (relative to their section) that change no result: speed, display, safety caps
IGNORED = {
    "data": ("num_workers",),
    "tokenizer": ("train.progress",),
    "latents": ("batch_size",),
    "dit": ("train.progress", "snapshots"),  # snapshots only keep copies of the EMA weights along the way
    "sample": ("batch_size", "max_nfe"),  # max_nfe only stops a runaway dopri5
}
# fields added after keys were in use (the pack): keyed only when set away from the value that gives the earlier
# behaviour, so every older key stays valid (section -> dotted field -> that value)
KEYED_WHEN_SET = {
    "data": {"crop": "center", "shape_set": "classic"},  # the ImageNet presets' official random crop; the outline shapes
    # official VFM input; stage chains; the toy presets' colour-balanced pixel loss
    "tokenizer": {"vf.preprocess": "normalized", "init_from": None, "loss.colour_balance": 0.0},
    "dit": {"seed": None},  # unset, the top-level seed decides
    "metrics": {"toy.version": 1},  # the multi-factor toy FID network (version 2)
}
FOLDERS = {"tokenizer": "tokenizers", "latents": "latents", "features": "features", "dit": "dits"}
RESULT_FOLDERS = {"generation": "results", "uniformity": "uniformity", "probe": "probes", "floor": "floors",
                  "reconstruction": "reconstructions"}


def _drop(d: dict, dotted: str, only_if=...) -> None:
    """Remove a dotted field from a nested dict in place (absent: nothing); with `only_if`, only at that value."""
    *parents, leaf = dotted.split(".")
    node = d
    for p in parents:
        node = node.get(p, {})
    if leaf in node and (only_if is ... or node[leaf] == only_if):
        del node[leaf]


def stage_fields(config: Config, section: str) -> dict | int:
    """A config section as keyed: without its IGNORED fields, and KEYED_WHEN_SET fields only when set.

    A tokenizer.init_from preset name is keyed as the key of the stage it names (presets.previous_stage), so
    retraining an earlier stage of a chain reaches every later one.
    """
    if section == "seed":
        return config.seed
    d = to_dict(getattr(config, section))
    for dotted in IGNORED.get(section, ()):
        _drop(d, dotted)
    for dotted, unset in KEYED_WHEN_SET.get(section, {}).items():
        _drop(d, dotted, only_if=unset)
    if section == "dit" and d["repa"]["weight"] == 0:
        del d["repa"]  # REPA with weight 0 is off: none of its fields changes a DiT
    init = d.get("init_from") if section == "tokenizer" else None
    if init is not None and "/" not in init:
        from .presets import previous_stage

        d["init_from"] = {"preset": init, "tokenizer": stage_key(previous_stage(config), "tokenizer")}
    return d


def stage_key(config: Config, stage: str, *, n: int | None = None, runs: int | None = None,
              step: int | None = None) -> str:
    """The cache key of `stage` ("tokenizer", "latents", "dit", "generation", "uniformity", "probe") of `config`.

    It hashes the stage's own sections (STAGES) and the key of the stage it consumes, so a change reaches
    every stage downstream of it and none upstream. "generation" needs the sample count `n` (and, for a DiT
    snapshot, its `step`; None is the finished DiT); "uniformity" the vector count `n` and the number of t-SNE `runs`.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    parent, sections = STAGES[stage]
    if stage == "uniformity":
        return config_hash([stage_key(config, parent), n, runs])
    if stage == "probe":
        return config_hash([stage_key(config, parent), to_dict(config.tokenizer.probe)])
    if stage == "features":
        return config_hash(features_identity(config))
    record = {s: stage_fields(config, s) for s in sections}
    if parent is not None:
        record[parent] = stage_key(config, parent)
    if stage in ("generation", "floor", "reconstruction"):
        if n is None:
            raise ValueError(f"the {stage} key needs the sample count n")
        record["n"] = n
    if stage == "generation" and step is not None:
        record["step"] = step
    return config_hash(record)


def features_identity(config: Config) -> dict:
    """What REPA's feature cache depends on: the images (data, flips), the VFM and the DiT's token grid."""
    from .build import token_grid, toy_vfm_config

    r = config.dit.repa
    toy = to_dict(toy_vfm_config(config)) if r.foundation.startswith("toy") else None
    return {"data": stage_fields(config, "data"), "flip": config.latents.flip, "foundation": r.foundation,
            "pretrained_path": r.pretrained_path, "toy_vfm": toy, "grid": token_grid(config)}


def stage_dir(config: Config, stage: str, root: str | Path | None = None) -> Path:
    """The run folder of a tokenizer, latents or dit stage under `root` (default data/cache/study)."""
    root = Path(root) if root is not None else cache_dir("study")
    return root / FOLDERS[stage] / stage_key(config, stage)


def result_path(config: Config, stage: str, root: str | Path | None = None, **kw) -> Path:
    """The JSON file of a cached generation, uniformity or probe result under `root` (default data/cache/study)."""
    root = Path(root) if root is not None else cache_dir("study")
    path = root / RESULT_FOLDERS[stage] / f"{stage_key(config, stage, **kw)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cached_result(config: Config, stage: str, root: str | Path | None = None, **kw) -> tuple[Path, dict | None]:
    """(path, result) of a generation, uniformity or probe result: from the cache, else the pack, else None."""
    from . import pack

    path = result_path(config, stage, root, **kw)
    if not path.exists():
        pack.restore(stage, path.stem, path)
    return path, (json.loads(path.read_text()) if path.exists() else None)


def save_result(config: Config, stage: str, path: Path, result: dict, **kw) -> dict:
    """Write a result JSON and, beside it, the config and key arguments that made it (what the pack records)."""
    from .atomic import atomic_write_json

    atomic_write_json(path, result, default=float)
    atomic_write_json(path.with_name(f"{path.stem}.config.json"), {"config": to_dict(config), "key_args": kw})
    return result


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
    done = finished(run, "tokenizer")
    if not done and not _restore_or_say(config, "tokenizer", run):
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


def _train_dit(config: Config, root, run: Path, progress: bool, until: int | None = None) -> None:
    """Train (resuming) the config's DiT into `run` on its latents, and on REPA's features when dit.repa is on;
    `until`: stop after that step (train.dit.fit_dit)."""
    from .train.dit import train_dit

    feats = features(config, root, progress=progress) if config.dit.repa.weight > 0 else None
    train_dit(config, latents(config, root, progress=progress), run, resume=True, features_dir=feats, until=until)


def dit(config: Config, root: str | Path | None = None, *, progress: bool = False):
    """(DiT with EMA weights and its sampling_record, history) on the config's latents; trained on a miss."""
    from .runs import load_dit

    run = stage_dir(config, "dit", root)
    done = finished(run, "dit")
    if not done and not _restore_or_say(config, "dit", run):
        _train_dit(config, root, run, progress)
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


# -- convergence: gFID along one DiT run, from the snapshots it kept ------------------------------------------
def log_steps(total: int, points: int = 4) -> tuple[int, ...]:
    """Log-spaced steps ending at `total`, halving from it: (75, 150, 300, 600) for 600 and 4 points."""
    return tuple(sorted({max(1, total // 2 ** k) for k in range(points)}))


def curve_steps(config: Config) -> tuple[int, ...]:
    """The steps of the config's convergence curve: dit.snapshots before the last step, then the last."""
    last = config.dit.train.steps
    return (*sorted({s for s in config.dit.snapshots if s < last}), last)


def dit_snapshots(config: Config, root: str | Path | None = None, *, progress: bool = False) -> Path:
    """The DiT run folder of `config`, holding a snapshot after every step of config.dit.snapshots.

    dit.snapshots is in no key, so the snapshot run is the DiT stage's own run: on a miss it is trained with its
    snapshots. A run trained (or restored from the pack) without some of them is trained again with the same config
    in its snapshot_run/ subfolder (resumable) up to the last missing step, which hands its snapshots over and is
    removed: the cached dit.pt is never rewritten (the retrain is bit-identical to it on a CPU,
    tests/test_convergence.py).
    """
    import shutil

    from .checkpoint import list_checkpoints

    run = stage_dir(config, "dit", root)
    dit(config, root, progress=progress)
    scratch = run / "snapshot_run"
    missing = _take_snapshots(scratch, run, curve_steps(config)[:-1])
    if missing:
        if [s for s, _ in list_checkpoints(scratch) if s > missing[0]]:
            shutil.rmtree(scratch)  # it went past a step it did not keep (an earlier, shorter list of snapshots)
        print(f"training dit {run.name} again in {scratch.name}/ up to step {missing[-1]} for its snapshots at "
              f"steps {missing} (it was trained without them; its dit.pt stays)")
        _train_dit(config, root, scratch, progress, until=missing[-1])
        missing = _take_snapshots(scratch, run, missing)
        if missing:
            raise CheckpointError(f"the snapshot run {scratch} kept no snapshot at steps {missing}; delete it and rerun")
    if scratch.exists():
        shutil.rmtree(scratch)
    return run


def _take_snapshots(scratch: Path, run: Path, steps) -> list[int]:
    """Move the snapshots at `steps` that `scratch` kept into `run`; the steps `run` still lacks, in order."""
    from .checkpoint import snapshot_path

    for s in steps:
        if not snapshot_path(run, s).exists() and snapshot_path(scratch, s).exists():
            snapshot_path(run, s).parent.mkdir(parents=True, exist_ok=True)
            snapshot_path(scratch, s).replace(snapshot_path(run, s))
    return sorted(s for s in steps if not snapshot_path(run, s).exists())


def snapshot_generation(config: Config, step: int, root: str | Path | None = None, *, n: int | None = None,
                        device=None, progress: bool = False) -> dict:
    """`generation` of the config's DiT after `step` of its training steps (a step of `curve_steps`), with the
    step and the training loss logged by then; cached as JSON keyed by the DiT key, the sampler, n and the step.
    The last step is the finished DiT, so its result is `generation`'s own."""
    from .runs import load_dit

    n = n or config.sample.num_samples
    if step not in curve_steps(config):
        raise ConfigError(f"step {step} is not a step of this DiT's convergence curve {list(curve_steps(config))}; "
                          f"add it to dit.snapshots (below dit.train.steps={config.dit.train.steps})")
    if step == config.dit.train.steps:
        return {**generation(config, root, n=n, device=device, progress=progress), "step": step}
    path, cached = cached_result(config, "generation", root, n=n, step=step)
    if cached is not None:
        return cached
    tok, _ = tokenizer(config, root)
    run = dit_snapshots(config, root, progress=progress)
    model, _ = load_dit(run, step=step)
    history = read_history(run)
    logged = [r["loss"] for r in history["train"] if r["step"] <= step]
    out = {**evaluate_dit(config, tok, model, n=n, device=device, progress=progress), "step": step,
           "dit_loss": logged[-1] if logged else None}
    return save_result(config, "generation", path, out, n=n, step=step)


def convergence(config: Config, root: str | Path | None = None, *, n: int | None = None, device=None,
                progress: bool = False) -> list[dict]:
    """gFID (with IS, precision, recall, class accuracy) after each step of `curve_steps(config)`, from one DiT
    run's snapshots (`snapshot_generation`: each point cached, nothing retrained per point)."""
    return [snapshot_generation(config, s, root, n=n, device=device, progress=progress) for s in curve_steps(config)]


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
