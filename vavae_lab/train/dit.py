"""`train_dit(config, latents_dir)`: the one LightningDiT training loop for notebooks, the CLI and torchrun."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import dist
from ..checkpoint import (atomic_save, checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints,
                          rng_state, set_rng_state)
from ..config import Config, save_config, to_dict, validate
from ..device import autocast
from ..errors import CheckpointError, NonFiniteLossError
from ..weights import mismatch_summary
from .common import (JsonlLogger, StepBatches, Throughput, allreduce_gradients, backward_in_micro_batches,
                     batch_plan, ema_update, learning_rate, make_optimizer, set_lr)
from .tokenizer import TrainResult


def build_dit_for(config: Config, latent_shape, num_classes: int):
    """The LightningDiT of config.dit.model for latents of shape (C, h, w) and `num_classes` classes."""
    from ..diffusion.lightningdit import build_dit

    m = config.dit.model
    c, h, w = latent_shape
    return build_dit(m.size, input_size=h, in_channels=c, num_classes=num_classes, mlp=m.mlp, norm=m.norm,
                     pos=m.pos, qk_norm=m.qk_norm, adaln_shift=m.adaln_shift, class_dropout=m.class_dropout,
                     mlp_ratio=m.mlp_ratio)


def build_transport_for(config: Config):
    """The training path (rectified flow or DDPM) of config.dit.transport."""
    from ..diffusion.transport import build_transport

    t = config.dit.transport
    if t.path == "ddpm":
        return build_transport("ddpm", num_steps=t.ddpm_steps)
    return build_transport(t.path, t_sampling=t.t_sampling, logit_mean=t.logit_mean, logit_std=t.logit_std,
                           cos_weight=t.cos_weight)


def _restore(path: Path, model, ema, opt, scaler, device) -> int:
    """Load a full DiT training state; returns its step."""
    state = load_checkpoint(path, map_location=device)
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} does not match this config's DiT "
                              f"({mismatch_summary(model, state.get('model'), exc)}); resume with the config the "
                              "run was started with (its config.yaml), or use a new --out folder") from exc
    scaler.load_state_dict(state["scaler"])
    set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state["rng"].items()})
    return int(state["step"])


def train_dit(config: Config, latents_dir: str | Path, out_dir: str | Path | None = None, *,
              resume: bool = False) -> TrainResult:
    """Train a LightningDiT on a latent cache; returns (EMA model if ema_decay > 0 else the model, history).

    With `out_dir`, writes config.yaml, metrics.jsonl (loss, its cosine/MSE parts and the loss per t-bin),
    atomic checkpoints ({"model", "ema", "opt", ...}, the official layout) and the final `dit.pt`.
    """
    from ..diffusion.transport import loss_by_t_bins
    from ..latents import LatentDataset

    validate(config)  # a Config built in Python skips load_config's range checks
    info = dist.setup(config.device)
    tc, dc = config.dit.train, config.dit
    run_dir = Path(out_dir) if out_dir is not None else None
    data = LatentDataset(latents_dir)
    seed = config.seed if dc.seed is None else dc.seed
    torch.manual_seed(seed)
    model = build_dit_for(config, data.latent_shape, data.num_classes).to(info.device)
    dist.broadcast_module(model)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    transport = build_transport_for(config)
    forward = torch.compile(model) if tc.compile and info.device.type == "cuda" else model
    params = list(model.parameters())
    opt = make_optimizer(params, tc)
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16")
    torch.manual_seed(seed * 1000 + info.rank)

    if run_dir is not None and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    start = _restore(ckpt, model, ema, opt, scaler, info.device) if ckpt is not None else 0
    if ckpt is not None and info.is_main:
        print(f"resuming from {ckpt} (step {start})")
    if run_dir is not None and info.is_main:
        save_config(config, run_dir / "config.yaml")
    artifact = sampling_record(data)  # what sampling needs, in every checkpoint and dit.pt
    logger = JsonlLogger(run_dir / "metrics.jsonl" if (run_dir is not None and info.is_main) else None)
    if start and info.is_main:
        logger.truncate_after(start)
    elif info.is_main and logger.path is not None and logger.path.exists():
        logger.path.unlink()

    batches = StepBatches(len(data), tc.batch_size, seed=seed + 17, rank=info.rank,
                          world_size=info.world_size, hflip=False)
    per_rank, accum, micro = batch_plan(tc.batch_size, info.world_size, tc.micro_batch)
    if info.is_main:
        split = f" in {accum} micro-batches of {micro}" if accum > 1 else ""
        print(f"effective batch {tc.batch_size} = {info.world_size} rank(s) x {per_rank}{split}; peak lr {tc.lr:g}")

    def micro_loss(xb, yb):
        with autocast(info.device, tc.precision):
            return transport.loss(forward, xb, yb)

    if tc.progress and info.is_main and info.device.type == "cpu" and start < tc.steps:
        from ..estimate import describe_estimate

        print(describe_estimate(config, "dit", start_step=start))
    meter, t_start = Throughput(), time.perf_counter()
    window_t, window_loss = [], []
    bar = tqdm(total=tc.steps, initial=start, desc=f"dit[{config.name}]",
               disable=not (tc.progress and info.is_main), dynamic_ncols=True)
    model.train()
    last_good = ckpt
    for step in range(start, tc.steps):
        idx, _ = batches.indices(step)
        x, y = data.get_batch(idx)
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        lr = learning_rate(tc, step)
        set_lr(opt, lr)
        opt.zero_grad(set_to_none=True)
        out = backward_in_micro_batches(micro_loss, (x, y), accum, scaler)
        loss = out["loss"]
        if dist.broadcast_flag(not torch.isfinite(loss).item(), info.device):
            bar.close()
            where = f"; the last good checkpoint is {last_good}" if last_good else ""
            raise NonFiniteLossError(f"non-finite DiT loss ({loss.item()}) at step {step}{where}. Lower "
                                     "dit.train.lr, set dit.train.grad_clip, or enable dit.model.qk_norm=true.")
        allreduce_gradients(params)
        grad_norm = None
        if tc.grad_clip > 0:
            scaler.unscale_(opt)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        scaler.step(opt)
        scaler.update()
        ema_update(ema, model, dc.ema_decay if step > 0 else 0.0)
        window_t.append(out["t"].detach().float().cpu())
        window_loss.append(out["per_sample"].detach().float().cpu())

        done = step + 1
        meter.add(tc.batch_size)
        if info.is_main and (done % tc.log_every == 0 or done == tc.steps):
            bins = loss_by_t_bins(torch.cat(window_t), torch.cat(window_loss))
            record = {"step": done, "lr": lr, "img_per_s": meter.rate(), "loss": float(loss.detach()),
                      **{k: float(out[k].detach()) for k in ("mse", "cos") if k in out},
                      **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                      "loss_by_t": {k: float(v) for k, v in bins.items()}}
            logger.log(record)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
            window_t, window_loss = [], []
        bar.update(1)
        if run_dir is not None and (done % tc.ckpt_every == 0 or done == tc.steps):
            if info.is_main:
                path = checkpoint_path(run_dir, done)
                atomic_save({"step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                             "opt": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                             "config": to_dict(config), **artifact}, path)
                prune_checkpoints(run_dir, tc.keep_checkpoints)
                last_good = path
            dist.barrier()
    bar.close()
    history = {"train": list(logger.records), "run_dir": str(run_dir) if run_dir else None,
               "wall_time_s": time.perf_counter() - t_start}
    if run_dir is not None and info.is_main:
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "config": to_dict(config), **artifact},
                    run_dir / "dit.pt")
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    dist.barrier()
    model.eval()
    return TrainResult(ema if dc.ema_decay > 0 else model, history)


def sampling_record(data) -> dict:
    """What sampling needs besides the weights, from a LatentDataset: shape, classes, mean/std, tokenizer sha256."""
    return {"latent_shape": list(data.latent_shape), "num_classes": int(data.num_classes),
            "latent_mean": data.mean.clone(), "latent_std": data.std.clone(),
            "tokenizer_sha256": (data.meta.get("identity") or {}).get("tokenizer_weights_sha256"),
            "tokenizer_dir": data.meta.get("tokenizer_dir")}


def latents_dir_of(run_dir: str | Path) -> Path:
    """The latent cache an old-layout DiT run was trained on (recorded in its latents.txt)."""
    record = Path(run_dir) / "latents.txt"
    if not record.is_file():
        raise CheckpointError(f"{Path(run_dir) / 'dit.pt'} predates self-contained DiT files (no latent stats inside) "
                              f"and {record} is missing; re-run `python -m vavae_lab train-dit --latents CACHE "
                              f"--out {run_dir} --resume`, or write the latent cache folder's path into {record}")
    return Path(record.read_text().strip())


def _legacy_record(run_dir: Path, state: dict) -> dict:
    """The sampling record of a DiT file written before dit.pt held one: stats beside it or via latents.txt."""
    from ..latents import STATS_FILE, LatentDataset, load_stats
    from ..latents.cache import read_meta

    record = {k: state.get(k) for k in ("latent_shape", "num_classes")}
    beside = run_dir / STATS_FILE  # Study copies the stats next to its DiT
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


def load_dit(run_dir: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"):
    """(model, config) of a trained DiT run folder (its dit.pt, else its newest checkpoint), in eval mode.

    The model's `sampling_record` attribute holds what sampling needs: latent_shape, num_classes,
    latent_mean/latent_std (1 x C x 1 x 1) and tokenizer_sha256 / tokenizer_dir (None when unknown).
    """
    from ..config import from_dict

    run_dir = Path(run_dir)
    path = run_dir / "dit.pt" if (run_dir / "dit.pt").exists() else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} holds no dit.pt and no checkpoint; train one with "
                              f"`python -m vavae_lab train-dit --preset lab --latents DIR --out {run_dir}`")
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict) or not {"model", "ema", "config"} <= set(state):
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
