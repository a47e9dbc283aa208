"""Cheap proxies of a tokenizer's generation quality: latent uniformity and a "tiny-DiT probe" gFID.

The probe runs the real pipeline at a fixed small budget — encode a subset of the training images with the
current tokenizer, train a tiny LightningDiT on those latents, sample, decode and score with the toy FID
network — so its only difference from the full lab gFID is the budget. Whether either proxy ranks
tokenizers like the full gFID is an empirical question: `benchmarks/proxy_correlation.py` measures it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ..config import Config, apply_overrides
from ..presets import probe_config
from .uniformity import METRICS


def spearman(x, y) -> float:
    """Spearman rank correlation of two equally long sequences (average ranks for ties)."""
    from scipy.stats import spearmanr

    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two sequences of the same length >= 3, got {len(x)} and {len(y)}")
    return float(spearmanr(np.asarray(x, float), np.asarray(y, float)).statistic)


def run_probe(model: torch.nn.Module, config: Config, *, device=None, work_dir: str | Path | None = None) -> dict:
    """Uniformity metrics of the current latents and the tiny-DiT probe gFID, as a flat dict for the log.

    Works on the model in memory (its weights are read, never changed; its train/eval mode is restored):
    extraction encodes with it directly into a temporary latent cache under `work_dir`. Runs under a forked
    RNG, so calling it inside training does not change the training run. `device`: the model's, by default.
    """
    from ..generate import generation_fid
    from ..latents import LatentDataset, extract_latents
    from ..train.dit import train_dit
    from .uniformity import uniformity_metrics

    p, pc = config.tokenizer.probe, probe_config(config)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    pc = apply_overrides(pc, {"device": str(device)})  # extraction and the DiT run where the model is
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            extract_latents(pc, model, Path(tmp) / "lat", progress=False)
            latents = LatentDataset(Path(tmp) / "lat", flip=False)
            uni = uniformity_metrics(latents, n=min(p.uniformity_n, latents.num_images), runs=p.uniformity_runs,
                                     seed=config.seed)
            dit, _ = train_dit(pc, Path(tmp) / "lat", None)
            gen = generation_fid(model, dit.to(device), (latents.mean, latents.std), pc, device=device,
                                 progress=False, kid=False)
    finally:
        model.train(was_training)
    return {"probe_gfid": gen["fid"], **{f"probe_{name}": uni[name]["mean"] for name in METRICS}}
