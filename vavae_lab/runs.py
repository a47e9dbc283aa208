"""Run folders -> models: what a run folder holds, and loading a trained tokenizer, a DiT or a latent cache from one.

The one place that names what the training loops and extraction write: a tokenizer run holds tokenizer.pt
(else checkpoints/step_*.pt), a DiT run dit.pt (else checkpoints), both with history.json, config.yaml and
metrics.jsonl; a latent cache its shards, stats and meta.json. Extraction, sampling, the study, the pack and the
command line all read and write through these names; `as_tokenizer` and `as_dit` accept a model or a folder alike.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .build import build_autoencoder, build_dit_for
from .checkpoint import latest_checkpoint, list_snapshots, load_checkpoint, snapshot_path
from .config import from_dict
from .errors import CheckpointError
from .latents.shards import read_meta
from .latents.stats import STATS_FILE
from .weights import mismatch_summary

# a run folder's files: the finished weights of each stage, and what every run writes beside them
WEIGHTS_FILE = {"tokenizer": "tokenizer.pt", "dit": "dit.pt"}
HISTORY_FILE, CONFIG_FILE, METRICS_FILE = "history.json", "config.yaml", "metrics.jsonl"

Folder = str | Path


def finished(run_dir: Folder, stage: str) -> bool:
    """Whether a tokenizer or DiT run folder holds its final weights and its history (what the loop writes last)."""
    run_dir = Path(run_dir)
    return (run_dir / WEIGHTS_FILE[stage]).is_file() and (run_dir / HISTORY_FILE).is_file()


def read_history(run_dir: Folder) -> dict:
    """The history.json a finished tokenizer or DiT run wrote (its loss curves, evaluations, wall time)."""
    import json

    return json.loads((Path(run_dir) / HISTORY_FILE).read_text())


def _no_run(run_dir: Path, stage: str, train: str) -> CheckpointError:
    """Why a run folder holds no weights, in the order a user gets it wrong: a file, a missing folder, an empty one."""
    name = WEIGHTS_FILE[stage]
    if run_dir.is_file():
        return CheckpointError(f"{run_dir} is a file; pass the run folder that holds it ({run_dir.parent})")
    if not run_dir.exists():
        return CheckpointError(f"{run_dir} does not exist; pass the folder the {stage} run was written to")
    return CheckpointError(f"{run_dir} holds no {name} and no checkpoint; train one there with "
                           f"`python -m vavae_lab {train} {run_dir}`")


def load_tokenizer(run_dir: Folder, *, device: str | torch.device = "cpu"):
    """The trained autoencoder of a run folder (its tokenizer.pt, else its newest checkpoint), in eval mode."""
    run_dir = Path(run_dir)
    final = run_dir / WEIGHTS_FILE["tokenizer"]
    path = final if final.exists() else latest_checkpoint(run_dir)
    if path is None:
        raise _no_run(run_dir, "tokenizer", "train-tokenizer --preset PRESET --out")
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


def _dit_state(run_dir: Path, step: int | None) -> tuple[Path, dict]:
    """(file, contents) of a DiT run: dit.pt, else its newest checkpoint; with `step`, the snapshot kept after that
    step (dit.pt or a checkpoint when it is their step)."""
    if step is not None and snapshot_path(run_dir, step).exists():
        return snapshot_path(run_dir, step), load_checkpoint(snapshot_path(run_dir, step), map_location="cpu")
    final = run_dir / WEIGHTS_FILE["dit"]
    path = final if final.exists() else latest_checkpoint(run_dir)
    if path is None:
        raise _no_run(run_dir, "dit", "train-dit --preset PRESET --latents DIR --out")
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
    if "latent_mean" not in state:
        raise CheckpointError(f"{path} predates DiT files that hold their latent statistics (vavae_lab before "
                              "2026-11), so it cannot be sampled; train it again with `python -m vavae_lab train-dit`")
    config = from_dict(state["config"])
    record = {k: state.get(k) for k in ("latent_shape", "num_classes", "latent_mean", "latent_std",
                                        "tokenizer_sha256", "tokenizer_dir")}
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
