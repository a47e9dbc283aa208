"""Run folders -> models: load a trained tokenizer, a DiT (with what sampling needs) or a latent cache.

The one place that reads what the training loops and extraction write: a tokenizer run holds tokenizer.pt
(else checkpoints/step_*.pt), a DiT run dit.pt (else checkpoints), a latent cache its shards, stats and
meta.json. Extraction, sampling, the study and the command line all load through here; `as_tokenizer` and
`as_dit` let them accept a model or a folder alike.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import latest_checkpoint, list_snapshots, load_checkpoint, snapshot_path
from .config import from_dict
from .diffusion.build import build_dit_for
from .errors import CheckpointError
from .latents.dataset import LatentDataset
from .latents.shards import read_meta
from .latents.stats import STATS_FILE, load_stats
from .tokenizer.build import build_autoencoder
from .weights import mismatch_summary

Folder = str | Path


def load_tokenizer(run_dir: Folder, *, device: str | torch.device = "cpu"):
    """The trained autoencoder of a run folder (its tokenizer.pt, else its newest checkpoint), in eval mode."""
    run_dir = Path(run_dir)
    final = run_dir / "tokenizer.pt"
    path = final if final.exists() else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} holds no tokenizer.pt and no checkpoint; train one with "
                              f"`python -m vavae_lab train-tokenizer --preset lab --out {run_dir}`")
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or "model" not in state or "config" not in state or "ema" in state:
        what = "a DiT file" if isinstance(state, dict) and "ema" in state else "not a vavae_lab tokenizer file"
        raise CheckpointError(f"{path} is {what} (a tokenizer file holds 'model' and 'config'); pass the folder "
                              "train-tokenizer wrote, or load released weights with vavae_lab.load_official_vavae")
    config = from_dict(state["config"])
    model = build_autoencoder(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the architecture in its own config: "
                              f"{mismatch_summary(model, state['model'], exc)}") from exc
    return model.to(device).eval()


def latents_dir_of(run_dir: Folder) -> Path:
    """The latent cache an old-layout DiT run was trained on (recorded in its latents.txt)."""
    record = Path(run_dir) / "latents.txt"
    if not record.is_file():
        raise CheckpointError(f"{Path(run_dir) / 'dit.pt'} predates self-contained DiT files (no latent stats inside) "
                              f"and {record} is missing; re-run `python -m vavae_lab train-dit --latents CACHE "
                              f"--out {run_dir} --resume`, or write the latent cache folder's path into {record}")
    return Path(record.read_text().strip())


def _legacy_record(run_dir: Path, state: dict) -> dict:
    """The sampling record of a DiT file written before dit.pt held one: stats beside it or via latents.txt."""
    record = {k: state.get(k) for k in ("latent_shape", "num_classes")}
    beside = run_dir / STATS_FILE  # the study used to copy the stats next to its DiT
    try:
        latents = latents_dir_of(run_dir) if not (beside.is_file() and record["latent_shape"]) else None
    except CheckpointError as exc:
        if record["latent_shape"] is None:
            raise
        return {**record, "latent_mean": None, "latent_std": None, "tokenizer_sha256": None,
                "tokenizer_dir": None, "missing": str(exc)}  # loads; sampling says what to re-run
    if record["latent_shape"] is None:  # an intermediate checkpoint: read the shape off the latent cache
        data = LatentDataset(latents)
        record.update(latent_shape=list(data.latent_shape), num_classes=data.num_classes)
    mean, std = load_stats(beside if beside.is_file() else latents / STATS_FILE)
    meta = (read_meta(latents) if latents is not None else None) or {}
    return {**record, "latent_mean": mean, "latent_std": std, "tokenizer_dir": meta.get("tokenizer_dir"),
            "tokenizer_sha256": (meta.get("identity") or {}).get("tokenizer_weights_sha256")}


def _dit_state(run_dir: Path, step: int | None) -> tuple[Path, dict]:
    """(file, contents) of a DiT run: dit.pt, else its newest checkpoint; with `step`, the snapshot kept after that
    step (dit.pt or a checkpoint when it is their step)."""
    if step is not None and snapshot_path(run_dir, step).exists():
        return snapshot_path(run_dir, step), load_checkpoint(snapshot_path(run_dir, step), map_location="cpu")
    path = run_dir / "dit.pt" if (run_dir / "dit.pt").exists() else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} holds no dit.pt and no checkpoint; train one with "
                              f"`python -m vavae_lab train-dit --preset lab --latents DIR --out {run_dir}`")
    state = load_checkpoint(path, map_location="cpu")
    if step is not None and isinstance(state, dict):  # dit.pt has no "step": its config's is its last
        last = state.get("step") or (state.get("config") or {}).get("dit", {}).get("train", {}).get("steps")
        if step != last:
            kept = ", ".join(str(s) for s, _ in list_snapshots(run_dir)) or "none"
            raise CheckpointError(f"{run_dir} kept no snapshot at step {step} (snapshots: {kept}; {path.name} is step "
                                  f"{last}); train the run with dit.snapshots=[{step}] to keep one")
    return path, state


def load_dit(run_dir: Folder, *, use_ema: bool = True, device: str | torch.device = "cpu", step: int | None = None):
    """(model, config) of a trained DiT run folder (its dit.pt, else its newest checkpoint), in eval mode.

    With `step`, the EMA weights after that many steps: a snapshot the run kept (config dit.snapshots), or dit.pt
    at its last step. The model's `sampling_record` attribute holds what sampling needs: latent_shape,
    num_classes, latent_mean/latent_std (1 x C x 1 x 1) and tokenizer_sha256 / tokenizer_dir (None when unknown).
    """
    run_dir = Path(run_dir)
    path, state = _dit_state(run_dir, step)
    # a snapshot keeps only the EMA weights
    need = {"ema", "config"} | (set() if use_ema and path.parent.name == "snapshots" else {"model"})
    if not isinstance(state, dict) or not need <= set(state):
        raise CheckpointError(f"{path} is not a vavae_lab DiT file (it lacks 'model', 'ema' or 'config'; a "
                              "tokenizer?); pass the folder train-dit wrote, or load released weights with "
                              "vavae_lab.load_official_lightningdit")
    config = from_dict(state["config"])
    if "latent_mean" in state:
        record = {k: state.get(k) for k in ("latent_shape", "num_classes", "latent_mean", "latent_std",
                                            "tokenizer_sha256", "tokenizer_dir")}
    else:
        record = _legacy_record(run_dir, state)
    model = build_dit_for(config, tuple(record["latent_shape"]), int(record["num_classes"]))
    try:
        model.load_state_dict(state["ema" if use_ema else "model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the DiT in its own config: "
                              f"{mismatch_summary(model, state['ema' if use_ema else 'model'], exc)}") from exc
    model.sampling_record = record
    return model.to(device).eval(), config


def latents_complete(cache: Folder) -> bool:
    """Whether a latent cache finished: its meta.json says complete and its stats file exists."""
    meta = read_meta(cache) or {}
    return bool(meta.get("complete", False)) and (Path(cache) / STATS_FILE).exists()


def as_tokenizer(tokenizer, *, device: str | torch.device = "cpu"):
    """A tokenizer model as given, or the one of a run folder, on `device`."""
    if isinstance(tokenizer, torch.nn.Module):
        return tokenizer.to(device)
    return load_tokenizer(tokenizer, device=device)


def as_dit(dit, *, device: str | torch.device = "cpu"):
    """A DiT model as given, or the EMA DiT of a run folder (with its sampling_record), on `device`."""
    if isinstance(dit, torch.nn.Module):
        return dit.to(device)
    return load_dit(dit, device=device)[0]
