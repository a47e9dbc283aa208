"""The tiny-DiT probe: a tokenizer's generation quality at a fixed small budget, and its latents' uniformity.

The probe runs the real pipeline at the budget `presets.probe_config` sets: encode a subset of the training images
with the current tokenizer, train a tiny LightningDiT on those latents, sample, decode and score with the toy FID
network, so its only difference from the full lab gFID is the budget. Whether it ranks tokenizers like the full
gFID is an empirical question: `benchmarks/proxy_correlation.py` and the proxies table measure it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .analysis.uniformity import METRICS
from .config import Config, apply_overrides
from .presets import probe_config


def run_probe(model: torch.nn.Module, config: Config, *, device=None, work_dir: str | Path | None = None) -> dict:
    """Uniformity metrics of the current latents and the tiny-DiT probe gFID, as a flat dict for the log.

    Works on the model in memory (its weights are read, never changed; its train/eval mode is restored):
    extraction encodes with it directly into a temporary latent cache under `work_dir`. Runs under a forked
    RNG, so calling it inside training does not change the training run. `device`: the model's, by default.
    """
    from .analysis.uniformity import uniformity_metrics
    from .generate import generation_fid
    from .latents import LatentDataset, extract_latents
    from .train.dit import train_dit

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
