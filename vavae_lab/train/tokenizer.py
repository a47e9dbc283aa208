"""VA-VAE tokenizer training: `fit_tokenizer` runs the loop on built parts; `train_tokenizer(config)` builds them.

One loop for notebooks, the CLI and torchrun. `fit_tokenizer` takes the model, its objective, the frozen VFM,
the data, a `TrainConfig` and plain settings; `train_tokenizer` is where the Config is read (build.py makes the
parts from its sections) before it calls `fit_tokenizer`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from .. import dist
from ..build import TokenizerParts, build_tokenizer_parts, build_train_eval_data
from ..checkpoint import (atomic_save, checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints,
                          rng_state, set_rng_state)
from ..config import Config, TrainConfig, to_dict
from ..config_rules import validate
from ..device import autocast
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..runs import HISTORY_FILE, WEIGHTS_FILE
from ..weights import mismatch_summary
from .common import (RunFiles, StepBatches, Throughput, allreduce_gradients, batch_plan, learning_rate,
                     make_optimizer, prepare_run, set_lr)


class TrainResult(NamedTuple):
    """What a training function returns: the trained model and its metric history."""

    model: torch.nn.Module
    history: dict


def _state(step, model, loss_fn, opt_ae, opt_disc, scaler, config_record: dict) -> dict:
    """Everything needed to continue a run exactly."""
    return {"step": step, "model": model.state_dict(), "loss": loss_fn.state_dict(),
            "opt_ae": opt_ae.state_dict(), "opt_disc": opt_disc.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "config": config_record}


def _restore(path: Path, model, loss_fn, opt_ae, opt_disc, scaler, device) -> int:
    """Load a full training state; returns the step it was written at."""
    state = load_checkpoint(path, map_location=device)
    try:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt_ae.load_state_dict(state["opt_ae"])
        opt_disc.load_state_dict(state["opt_disc"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} does not match this config's model "
                              f"({mismatch_summary(model, state.get('model'), exc)}); resume with the config "
                              f"the run was started with (its config.yaml), or use a new --out folder") from exc
    scaler.load_state_dict(state["scaler"])
    set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state["rng"].items()})
    return int(state["step"])


def _initialise(config: Config, model, loss_fn, device, source: Path | None) -> Path:
    """Load the autoencoder and loss weights (discriminator, VF projection) of the run tokenizer.init_from names.

    Like the official weight_init between the VA-VAE stages: weights only, so optimisers and the step count
    start afresh (disc_start counts from this run's step 0). `source` is that run's folder
    (vavae_lab.pipeline.init_source); None takes tokenizer.init_from itself when it is a path.
    """
    init = config.tokenizer.init_from
    if source is None and "/" not in init:
        raise ConfigError(f"tokenizer.init_from={init} names a stage preset; pass its run folder as "
                          "init_dir=vavae_lab.pipeline.init_source(config) (the CLI and the cached chain do)")
    source = Path(source if source is not None else init).expanduser()
    ckpt = latest_checkpoint(source) if source.is_dir() else None
    if ckpt is None or not (source / WEIGHTS_FILE["tokenizer"]).is_file():
        how = (f"train it first: python -m vavae_lab train-tokenizer --preset {config.tokenizer.init_from} "
               "with this run's other overrides" if "/" not in config.tokenizer.init_from
               else "train it first, or point tokenizer.init_from at a finished run folder")
        raise CheckpointError(f"tokenizer.init_from={config.tokenizer.init_from}: {source} holds no finished tokenizer "
                              f"run (tokenizer.pt and checkpoints/step_*.pt); {how}")
    state = load_checkpoint(ckpt, map_location=device)
    own = {k: v.clone() for k, v in loss_fn.state_dict().items() if k.endswith("vf_weight_cache")}
    try:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        loss_fn.load_state_dict(own, strict=False)  # the adaptive-weight cache counts this run's steps
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"tokenizer.init_from={config.tokenizer.init_from}: {ckpt} does not match this "
                              f"config's model ({mismatch_summary(model, state.get('model'), exc)})") from exc
    return ckpt


def train_tokenizer(config: Config, out_dir: str | Path | None = None, *, resume: bool = False,
                    probe: Callable[[torch.nn.Module], dict] | None = None,
                    init_dir: str | Path | None = None) -> TrainResult:
    """Train a KL-VAE tokenizer (with the VF loss when config.tokenizer.vf.enabled); returns model and history.

    With `out_dir`, writes config.yaml, metrics.jsonl, atomic checkpoints every `ckpt_every` steps and the
    final `tokenizer.pt`; `resume=True` continues from the newest checkpoint there. A fresh run with
    config.tokenizer.init_from set starts from that run's weights (a stage chain, `_initialise`), found in
    `init_dir` (vavae_lab.pipeline.init_source(config)) or at init_from itself when it is a path.

    `probe`, when given, is called with the model (in train mode, on the training device) every
    config.tokenizer.probe.every steps and at the last; the flat dict it returns is logged and kept in
    history["probe"]. It must leave the model's weights and the RNG as it found them
    (`vavae_lab.pipeline.tokenizer_probe(config)` builds the tiny-DiT probe that does).
    """
    validate(config)  # a Config built in Python skips load_config's range checks
    info = dist.setup(config.device)
    tc, d = config.tokenizer.train, config.data
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    train_set, eval_images = build_train_eval_data(config, eval_count=tc.eval_images)
    if not info.is_main:
        dist.barrier()  # rank 0 pretrains and caches the toy networks first
    parts = build_tokenizer_parts(config, info.device)
    if info.is_main:
        dist.barrier()
    _, accum, _ = batch_plan(tc.batch_size, info.world_size, tc.micro_batch)
    if accum > 1:  # the adaptive GAN and VF weights are per-batch gradient ratios; accumulation would change them
        raise ConfigError(f"tokenizer.train.micro_batch={tc.micro_batch} would accumulate {accum} micro-batches, "
                          "which only the DiT stage supports; set it to 0 and use more GPUs or a smaller "
                          "tokenizer.train.batch_size")
    if config.tokenizer.probe.every and probe is None and info.is_main:
        print("note: tokenizer.probe.every is set but no probe was passed to train_tokenizer; nothing is probed "
              "(pass probe=vavae_lab.pipeline.tokenizer_probe(config))")

    def init(model, loss_fn) -> str:
        source = _initialise(config, model, loss_fn, info.device, Path(init_dir) if init_dir is not None else None)
        return f"{source} (tokenizer.init_from={config.tokenizer.init_from})"

    def estimate(start: int) -> str:
        from ..estimate import describe_estimate

        return describe_estimate(config, "tokenizer", start_step=start)

    files = None if out_dir is None else RunFiles(Path(out_dir), to_dict(config), config)
    batches = dict(seed=d.seed + config.seed, hflip=d.hflip,
                   crop_seeds=d.crop == "random" and d.source == "imagefolder")
    return fit_tokenizer(parts, train_set, eval_images, tc, seed=config.seed, batches=batches,
                         disc_lr=config.tokenizer.loss.disc_lr, files=files, resume=resume,
                         init=init if config.tokenizer.init_from is not None else None,
                         probe=probe if config.tokenizer.probe.every else None,
                         probe_every=config.tokenizer.probe.every,
                         name=config.name, estimate=estimate)


def fit_tokenizer(parts: TokenizerParts, train_set, eval_images: torch.Tensor, tc: TrainConfig, *, seed: int,
                  batches: dict, disc_lr: float | None = None, files: RunFiles | None = None, resume: bool = False,
                  init: Callable[[torch.nn.Module, torch.nn.Module], str] | None = None,
                  probe: Callable[[torch.nn.Module], dict] | None = None, probe_every: int = 0,
                  name: str = "tokenizer", estimate: Callable[[int], str] | None = None) -> TrainResult:
    """Train `parts.model` with `parts.loss` (and its discriminator) on `train_set` for tc.steps steps.

    `seed` fixes each rank's noise; `batches` the batch order (`StepBatches` keywords: seed, hflip, crop_seeds).
    With `files`, checkpoints, the metrics log and the final weights go to `files.folder`, and `resume` continues
    from its newest checkpoint; a fresh run calls `init(model, loss)` first when given (a stage chain; it returns
    what it loaded, for the log). `probe(model)` runs every `probe_every` steps and at the last; `eval_images`
    are scored with `parts.evaluate` at the end (and every tc.eval_every steps); `estimate(start)` is printed
    before a CPU run.
    """
    info = dist.setup(str(next(parts.model.parameters()).device))
    model, loss_fn = parts.model, parts.loss
    dist.broadcast_module(model)
    dist.broadcast_module(loss_fn)
    torch.manual_seed(seed * 1000 + info.rank)  # different posterior noise per rank
    # like LDM and the official VA-VAE, logvar stays at its initial value (not optimised)
    ae_params = list(model.parameters()) + loss_fn.generator_parameters()
    disc_params = loss_fn.discriminator_parameters()
    opt_ae, opt_disc = make_optimizer(ae_params, tc), make_optimizer(disc_params, tc, lr=disc_lr)
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16")
    run_dir = files.folder if files is not None else None
    start, ckpt, logger = prepare_run(
        files, resume, info, lambda path: _restore(path, model, loss_fn, opt_ae, opt_disc, scaler, info.device),
        init=(lambda: init(model, loss_fn)) if init is not None else None)
    order = StepBatches(len(train_set), tc.batch_size, rank=info.rank, world_size=info.world_size, **batches)
    if info.is_main:
        per_rank = batch_plan(tc.batch_size, info.world_size, tc.micro_batch)[0]
        print(f"effective batch {tc.batch_size} = {info.world_size} rank(s) x {per_rank}; peak lr {tc.lr:g}")
        if estimate is not None and tc.progress and info.device.type == "cpu" and start < tc.steps:
            print(estimate(start))
    loader = parts.make_loader(train_set, order, start, tc.steps)
    meter, t_start, last_good = Throughput(), time.perf_counter(), ckpt
    bar = tqdm(total=tc.steps, initial=start, desc=f"tokenizer[{name}]",
               disable=not (tc.progress and info.is_main), dynamic_ncols=True)
    model.train()
    loss_fn.train()
    for step in range(start, tc.steps):
        images = next(loader).to(info.device, non_blocking=True)
        lr, logs, loss = _step(step, images, parts, opt_ae, opt_disc, scaler, ae_params, disc_params, tc, disc_lr,
                               info, bar, last_good)
        done = step + 1
        meter.add(tc.batch_size)
        if info.is_main and (done % tc.log_every == 0 or done == tc.steps):
            record = {"step": done, "lr": lr, "img_per_s": meter.rate(), **logs}
            logger.log(record)
            bar.set_postfix(loss=f"{record.get('total', loss):.4g}", refresh=False)
        bar.update(1)
        if tc.eval_every and done % tc.eval_every == 0 and done != tc.steps and info.is_main:
            logger.log({"step": done, **parts.evaluate(model, eval_images)})
        if probe is not None and probe_every and (done % probe_every == 0 or done == tc.steps):
            if info.enabled:  # the probe trains a DiT in this process; under torchrun it would deadlock
                if info.is_main and done == probe_every:
                    print("tokenizer.probe is skipped under torchrun; run it on a saved tokenizer instead")
            else:
                logger.log({"step": done, **probe(model)})
                model.train()
        if run_dir is not None and (done % tc.ckpt_every == 0 or done == tc.steps):
            if info.is_main:
                path = checkpoint_path(run_dir, done)
                atomic_save(_state(done, model, loss_fn, opt_ae, opt_disc, scaler, files.config_record), path)
                prune_checkpoints(run_dir, tc.keep_checkpoints)
                last_good = path
            dist.barrier()
    bar.close()
    return _finish(parts, eval_images, logger, tc, files, info, t_start)


def _step(step: int, images, parts: TokenizerParts, opt_ae, opt_disc, scaler, ae_params, disc_params,
          tc: TrainConfig, disc_lr, info, bar, last_good) -> tuple[float, dict, float]:
    """One step: the autoencoder's loss and update, then the discriminator's once it is on; (lr, logs, loss)."""
    model, loss_fn, vfm = parts.model, parts.loss, parts.vfm
    lr = learning_rate(tc, step)
    set_lr(opt_ae, lr)
    set_lr(opt_disc, disc_lr or lr)
    with autocast(info.device, tc.precision):
        recon, posterior, z = model(images)
        features = vfm(images) if vfm is not None else None
        loss, logs = loss_fn.generator_loss(images, recon, posterior, step, enc_last_layer=model.encoder_last_layer(),
                                            dec_last_layer=model.decoder_last_layer(), z=z, features=features)
    if dist.broadcast_flag(not torch.isfinite(loss).item(), info.device):
        bar.close()
        where = f"; the last good checkpoint is {last_good}" if last_good else ""
        raise NonFiniteLossError(f"non-finite tokenizer loss ({loss.item()}) at step {step}{where}. "
                                 "Lower train.lr, set train.grad_clip, or use precision=fp32.")
    opt_ae.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    allreduce_gradients(ae_params)
    if tc.grad_clip > 0:
        scaler.unscale_(opt_ae)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(ae_params, tc.grad_clip))
    scaler.step(opt_ae)
    scaler.update()
    if loss_fn.active_disc_factor(step) > 0:
        with autocast(info.device, tc.precision):
            d_loss, d_logs = loss_fn.discriminator_loss(images, recon.detach(), step)
        opt_disc.zero_grad(set_to_none=True)
        d_loss.backward()
        allreduce_gradients(disc_params)
        opt_disc.step()
        logs.update(d_logs)
    return lr, logs, loss.item()


def _finish(parts: TokenizerParts, eval_images, logger, tc: TrainConfig, files: RunFiles | None, info,
            t_start: float) -> TrainResult:
    """Score the final model, write tokenizer.pt and history.json, and return the model in eval mode."""
    run_dir = files.folder if files is not None else None
    records = logger.records
    history = {"train": [r for r in records if "img_per_s" in r], "eval": [],
               "probe": [r for r in records if "probe_gfid" in r],
               "run_dir": str(run_dir) if run_dir else None, "wall_time_s": time.perf_counter() - t_start}
    if info.is_main:
        logger.log({"step": tc.steps, **parts.evaluate(parts.model, eval_images)})
        history["eval"] = [r for r in logger.records if "psnr" in r]
        if run_dir is not None:
            atomic_save({"model": parts.model.state_dict(), "config": files.config_record},
                        run_dir / WEIGHTS_FILE["tokenizer"])
            (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    dist.barrier()
    parts.model.eval()
    return TrainResult(parts.model, history)
