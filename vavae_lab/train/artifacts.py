"""Load trained tokenizers from run folders, and a config-keyed cache that trains only when needed."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import latest_checkpoint, load_checkpoint
from ..config import Config, from_dict, to_dict
from ..errors import CheckpointError
from ..weights import mismatch_summary
from ..paths import cache_dir, config_hash


def load_tokenizer(run_dir: str | Path, *, device: str | torch.device = "cpu"):
    """The trained autoencoder of a run folder (its tokenizer.pt, else its newest checkpoint), in eval mode."""
    from .builders import build_autoencoder

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


def tokenizer_run_dir(config: Config) -> Path:
    """The cache folder of a tokenizer run, keyed by everything in the config that changes the result."""
    key = to_dict(config)
    key.pop("name")  # a preset's name does not change the weights
    key["tokenizer"]["train"].pop("progress")
    key.pop("device")
    key["sample"].pop("max_nfe", None)  # added later; it changes no trained weight
    if key["dit"].get("seed") is None:
        key["dit"].pop("seed", None)  # keys from before dit.seed existed stay valid
    return cache_dir("tokenizers") / config_hash(key)


def cached_tokenizer(config: Config):
    """Load the tokenizer this config produces if it was trained before, else train it (resuming if cut off).

    Returns (model, history); the history of a loaded run is read from its history.json.
    """
    import json

    from .tokenizer import train_tokenizer

    run_dir = tokenizer_run_dir(config)
    if (run_dir / "tokenizer.pt").exists() and (run_dir / "history.json").exists():
        model = load_tokenizer(run_dir, device="cpu")
        history = json.loads((run_dir / "history.json").read_text())
        return model, history
    return train_tokenizer(config, run_dir, resume=True)
