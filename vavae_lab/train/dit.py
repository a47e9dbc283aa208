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
                          rng_state, set_rng_state, snapshot_path)
from ..config import Config, save_config, to_dict, validate
from ..device import autocast
from ..errors import CheckpointError, NonFiniteLossError
from ..build import build_dit_for, build_transport_for
from ..runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, WEIGHTS_FILE
from ..weights import mismatch_summary
from .common import (JsonlLogger, StepBatches, Throughput, allreduce_gradients, backward_in_micro_batches,
                     batch_plan, ema_update, learning_rate, make_optimizer, set_lr)
from .tokenizer import TrainResult


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
    atomic checkpoints ({"model", "ema", "opt", ...}, the official layout) and the final `dit.pt`; and after each
    step of config.dit.snapshots before the last, the EMA weights as snapshots/step_*.pt (read-only: the run's
    weights, random streams and cache key are the same with or without them).
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
        save_config(config, run_dir / CONFIG_FILE)
    artifact = sampling_record(data)  # what sampling needs, in every checkpoint and dit.pt
    logger = JsonlLogger(run_dir / METRICS_FILE if (run_dir is not None and info.is_main) else None)
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
        if run_dir is not None and info.is_main and done in dc.snapshots and done < tc.steps:
            atomic_save({"step": done, "ema": ema.state_dict(), "config": to_dict(config), **artifact},
                        snapshot_path(run_dir, done))
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
                    run_dir / WEIGHTS_FILE["dit"])
        (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    dist.barrier()
    model.eval()
    trained = ema if dc.ema_decay > 0 else model
    trained.sampling_record = dict(artifact)  # like runs.load_dit's: the stats travel with the model
    return TrainResult(trained, history)


def sampling_record(data) -> dict:
    """What sampling needs besides the weights, from a LatentDataset: shape, classes, mean/std, tokenizer sha256."""
    return {"latent_shape": list(data.latent_shape), "num_classes": int(data.num_classes),
            "latent_mean": data.mean.clone(), "latent_std": data.std.clone(),
            "tokenizer_sha256": (data.meta.get("identity") or {}).get("tokenizer_weights_sha256"),
            "tokenizer_dir": data.meta.get("tokenizer_dir")}
