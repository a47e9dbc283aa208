"""LightningDiT training: `fit_dit` runs the loop on parts you built; `train_dit(config, latents_dir)` builds them.

One loop for notebooks, the CLI and torchrun. `fit_dit` takes a model, a transport (its `loss`), a latent dataset,
a `TrainConfig` and plain settings, so a notebook can train a DiT of its own; `train_dit` is where the Config is
read (model, transport and seeds from its sections) before it calls `fit_dit`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .. import dist
from ..build import build_dit_for, build_repa_for, build_transport_for
from ..checkpoint import (atomic_save, checkpoint_path, load_checkpoint, prune_checkpoints, rng_state, set_rng_state,
                          snapshot_path)
from ..config import Config, TrainConfig, to_dict
from ..config_rules import validate
from ..device import autocast
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..runs import HISTORY_FILE, WEIGHTS_FILE
from ..weights import mismatch_summary
from .common import (JsonlLogger, RunFiles, StepBatches, Throughput, allreduce_gradients, backward_in_micro_batches,
                     batch_plan, ema_update, learning_rate, make_optimizer, prepare_run, set_lr)
from .tokenizer import TrainResult


def _restore(path: Path, model, ema, opt, scaler, device, repa=None) -> int:
    """Load a full DiT training state (with REPA's projector when there is one); returns its step."""
    state = load_checkpoint(path, map_location=device)
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        if repa is not None:
            repa.load_state_dict(state["repa"])
        opt.load_state_dict(state["opt"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} does not match this config's DiT "
                              f"({mismatch_summary(model, state.get('model'), exc)}); resume with the config the "
                              "run was started with (its config.yaml), or use a new --out folder") from exc
    scaler.load_state_dict(state["scaler"])
    set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state["rng"].items()})
    return int(state["step"])


def train_dit(config: Config, latents_dir: str | Path, out_dir: str | Path | None = None, *,
              resume: bool = False, features_dir: str | Path | None = None, until: int | None = None) -> TrainResult:
    """Train a LightningDiT on a latent cache; returns (EMA model if ema_decay > 0 else the model, history).

    With dit.repa.weight > 0, `features_dir` is the VFM feature cache of the same images (pipeline.features).

    With `out_dir`, writes config.yaml, metrics.jsonl (loss, its cosine/MSE parts and the loss per t-bin),
    atomic checkpoints ({"model", "ema", "opt", ...}, the official layout) and the final `dit.pt`; and after each
    step of config.dit.snapshots before the last, the EMA weights as snapshots/step_*.pt (read-only: the run's
    weights, random streams and cache key are the same with or without them). `until`: stop after that step (see
    `fit_dit`).
    """
    from ..latents.dataset import LatentDataset

    validate(config)  # a Config built in Python skips load_config's range checks
    info = dist.setup(config.device)
    data = LatentDataset(latents_dir)
    seed = config.seed if config.dit.seed is None else config.dit.seed
    torch.manual_seed(seed)
    model = build_dit_for(config, data.latent_shape, data.num_classes).to(info.device)
    repa, features = _repa_parts(config, model, data, features_dir)
    if repa is not None:
        repa.to(info.device)
    files = None if out_dir is None else RunFiles(Path(out_dir), to_dict(config), config, tuple(config.dit.snapshots))

    def estimate(start: int) -> str:
        from ..estimate import describe_estimate

        return describe_estimate(config, "dit", start_step=start)

    return fit_dit(model, build_transport_for(config), data, config.dit.train, ema_decay=config.dit.ema_decay,
                   seed=seed, files=files, resume=resume, name=config.name, estimate=estimate, repa=repa,
                   features=features, until=until)


def _repa_parts(config: Config, model, data, features_dir):
    """(Repa, FeatureCache) for dit.repa.weight > 0, checked against the latents; (None, None) when REPA is off."""
    from ..latents.features import FeatureCache

    if config.dit.repa.weight == 0:
        return None, None
    if features_dir is None:
        raise ConfigError("dit.repa.weight > 0 needs the VFM features of the training images: pass features_dir "
                          "(train-dit makes them itself; in Python: vavae_lab.pipeline.features(config))")
    features = FeatureCache(features_dir)
    tokens = (data.latent_shape[1] // model.patch_size) ** 2
    if len(features) != len(data) or features.tokens != tokens:
        raise ConfigError(f"the feature cache {features_dir} holds {len(features)} items of {features.tokens} tokens "
                          f"but the DiT trains on {len(data)} latents of {tokens} tokens; extract the features "
                          "with this config (same data, latents.flip and DiT patch size)")
    return build_repa_for(config, model, features.dim), features


def fit_dit(model: torch.nn.Module, transport, data, tc: TrainConfig, *, ema_decay: float, seed: int,
            files: RunFiles | None = None, resume: bool = False, name: str = "dit",
            estimate: Callable[[int], str] | None = None, repa=None, features=None,
            until: int | None = None) -> TrainResult:
    """Train `model` (built, on its device) with `transport.loss` on `data` (a LatentDataset) for tc.steps steps.

    An EMA copy follows the weights (`ema_decay`; 0 keeps none); `seed` fixes the batch order and each rank's noise.
    With `repa` (diffusion.repa.Repa, on the model's device) and `features` (a FeatureCache in the data's order),
    the REPA term joins the loss and its projector trains beside the model; it is kept in checkpoints, not in dit.pt.
    With `files`, checkpoints, the metrics log, snapshots and the final weights go to `files.folder`, and
    `resume` continues from its newest checkpoint. `estimate(start)`, when given, is printed before a CPU run.
    `until` (< tc.steps) stops the run after that step with a checkpoint and no final weights, as if cut off there:
    the steps before it are those of the whole run (a snapshot rerun stops at the last snapshot it needs).
    """
    info = dist.setup(str(next(model.parameters()).device))
    if (repa is None) != (features is None):
        raise ConfigError("fit_dit takes repa and features together (the REPA term and the VFM features it aligns to)")
    dist.broadcast_module(model)
    if repa is not None:
        dist.broadcast_module(repa)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    forward = torch.compile(model) if tc.compile and info.device.type == "cuda" else model
    params = list(model.parameters()) + (list(repa.parameters()) if repa is not None else [])
    groups = (params,) if repa is None else (list(model.parameters()), list(repa.parameters()))
    opt = make_optimizer(params, tc)
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16")
    torch.manual_seed(seed * 1000 + info.rank)
    run_dir = files.folder if files is not None else None
    start, ckpt, logger = prepare_run(files, resume, info,
                                      lambda path: _restore(path, model, ema, opt, scaler, info.device, repa))
    artifact = sampling_record(data)  # what sampling needs, in every checkpoint and dit.pt
    batches = StepBatches(len(data), tc.batch_size, seed=seed + 17, rank=info.rank, world_size=info.world_size,
                          hflip=False)
    per_rank, accum, micro = batch_plan(tc.batch_size, info.world_size, tc.micro_batch)
    if info.is_main:
        split = f" in {accum} micro-batches of {micro}" if accum > 1 else ""
        print(f"effective batch {tc.batch_size} = {info.world_size} rank(s) x {per_rank}{split}; peak lr {tc.lr:g}")
        if estimate is not None and tc.progress and info.device.type == "cpu" and start < tc.steps:
            print(estimate(start))

    def micro_loss(xb, yb, fb=None):
        with autocast(info.device, tc.precision):
            return transport.loss(forward, xb, yb) if repa is None else repa.loss(transport, forward, xb, yb, fb)

    t_start, bar = time.perf_counter(), tqdm(total=tc.steps, initial=start, desc=f"dit[{name}]",
                                             disable=not (tc.progress and info.is_main), dynamic_ncols=True)
    state = _LoopState(Throughput(), last_good=ckpt)
    model.train()
    last = tc.steps if until is None else min(until, tc.steps)
    for step in range(start, last):
        out, lr, grad_norm = _step(step, model, ema, opt, scaler, groups, micro_loss, (data, features), batches,
                                   accum, tc, ema_decay, info, state, bar)
        done = step + 1
        _log(state, logger, bar, out, lr, grad_norm, done, tc, info)
        if run_dir is not None and info.is_main and done in files.snapshots and done < tc.steps:
            atomic_save({"step": done, "ema": ema.state_dict(), "config": files.config_record, **artifact},
                        snapshot_path(run_dir, done))
        if run_dir is not None and (done % tc.ckpt_every == 0 or done == last):
            if info.is_main:
                path = checkpoint_path(run_dir, done)
                atomic_save({"step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                             "opt": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                             "config": files.config_record, **artifact,
                             **({"repa": repa.state_dict()} if repa is not None else {})}, path)
                prune_checkpoints(run_dir, tc.keep_checkpoints)
                state.last_good = path
            dist.barrier()
    bar.close()
    history = {"train": list(logger.records), "run_dir": str(run_dir) if run_dir else None,
               "wall_time_s": time.perf_counter() - t_start}
    if run_dir is not None and info.is_main and last == tc.steps:
        atomic_save({"model": model.state_dict(), "ema": ema.state_dict(), "config": files.config_record,
                     **artifact}, run_dir / WEIGHTS_FILE["dit"])
        (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    dist.barrier()
    model.eval()
    trained = ema if ema_decay > 0 else model
    trained.sampling_record = dict(artifact)  # like runs.load_dit's: the stats travel with the model
    return TrainResult(trained, history)


@dataclass
class _LoopState:
    """What the loop carries between steps: the throughput meter, the t and loss window of the next log line, and
    the last checkpoint written (named when a loss goes non-finite)."""

    meter: Throughput
    last_good: Path | None = None
    window_t: list = field(default_factory=list)
    window_loss: list = field(default_factory=list)


def _step(step: int, model, ema, opt, scaler, groups, micro_loss, sources, batches, accum: int, tc: TrainConfig,
          ema_decay: float, info, state: _LoopState, bar):
    """One optimisation step (micro-batches, gradient all-reduce, clipping, EMA); (loss parts, lr, grad norm).

    `sources` is (latent data, REPA features or None), both indexed by the same item indices."""
    data, features = sources
    idx, _ = batches.indices(step)
    tensors = data.get_batch(idx) + ((features.get_batch(idx),) if features is not None else ())
    tensors = tuple(t.to(info.device, non_blocking=True) for t in tensors)
    lr = learning_rate(tc, step)
    set_lr(opt, lr)
    opt.zero_grad(set_to_none=True)
    out = backward_in_micro_batches(micro_loss, tensors, accum, scaler)
    loss = out["loss"]
    if dist.broadcast_flag(not torch.isfinite(loss).item(), info.device):
        bar.close()
        where = f"; the last good checkpoint is {state.last_good}" if state.last_good else ""
        raise NonFiniteLossError(f"non-finite DiT loss ({loss.item()}) at step {step}{where}. Lower "
                                 "dit.train.lr, set dit.train.grad_clip, or enable dit.model.qk_norm=true.")
    allreduce_gradients([p for group in groups for p in group])
    grad_norm = None
    if tc.grad_clip > 0:
        scaler.unscale_(opt)
        grad_norm = _clip(groups, tc.grad_clip)
    scaler.step(opt)
    scaler.update()
    ema_update(ema, model, ema_decay if step > 0 else 0.0)
    state.window_t.append(out["t"].detach().float().cpu())
    state.window_loss.append(out["per_sample"].detach().float().cpu())
    return out, lr, grad_norm


def _clip(groups, max_norm: float) -> float:
    """Clip the gradients of all parameter groups (the DiT, REPA's projector) by their joint 2-norm; returns it.

    The joint norm is sqrt(sum of the groups' squared norms), which is the DiT's own norm, bit for bit, while the
    projector's gradients are zero: a REPA weight of 0 trains the same DiT as no REPA.
    """
    if len(groups) == 1:
        return float(torch.nn.utils.clip_grad_norm_(groups[0], max_norm))
    norms = torch.stack([torch.nn.utils.clip_grad_norm_(g, float("inf")) for g in groups])  # inf: measure only
    total = norms.square().sum().sqrt()
    grads = [p.grad for g in groups for p in g if p.grad is not None]
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return float(total)


def _log(state: _LoopState, logger: JsonlLogger, bar, out: dict, lr: float, grad_norm, done: int, tc: TrainConfig,
         info) -> None:
    """Count the step's images; every log_every steps (and at the last) log the loss, its parts and loss by t."""
    from ..diffusion.transport import loss_by_t_bins

    state.meter.add(tc.batch_size)
    if info.is_main and (done % tc.log_every == 0 or done == tc.steps):
        loss = float(out["loss"].detach())
        bins = loss_by_t_bins(torch.cat(state.window_t), torch.cat(state.window_loss))
        logger.log({"step": done, "lr": lr, "img_per_s": state.meter.rate(), "loss": loss,
                    **{k: float(out[k].detach()) for k in ("mse", "cos", "repa") if k in out},
                    **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                    "loss_by_t": {k: float(v) for k, v in bins.items()}})
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        state.window_t, state.window_loss = [], []
    bar.update(1)


def sampling_record(data) -> dict:
    """What sampling needs besides the weights, from a LatentDataset: shape, classes, mean/std, tokenizer sha256."""
    return {"latent_shape": list(data.latent_shape), "num_classes": int(data.num_classes),
            "latent_mean": data.mean.clone(), "latent_std": data.std.clone(),
            "tokenizer_sha256": (data.meta.get("identity") or {}).get("tokenizer_weights_sha256"),
            "tokenizer_dir": data.meta.get("tokenizer_dir")}
