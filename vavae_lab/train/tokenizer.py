"""`train_tokenizer(config)`: the one VA-VAE training loop for notebooks, the CLI and torchrun."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

from .. import dist
from ..checkpoint import (atomic_save, checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints,
                          rng_state, set_rng_state)
from ..config import Config, save_config, to_dict, validate
from ..device import autocast
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from ..build import build_tokenizer_parts, build_train_eval_data
from ..runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, WEIGHTS_FILE
from ..weights import mismatch_summary
from .common import (JsonlLogger, StepBatches, Throughput, allreduce_gradients, batch_plan, learning_rate,
                     make_optimizer, set_lr)


class TrainResult(NamedTuple):
    """What a training function returns: the trained model and its metric history."""

    model: torch.nn.Module
    history: dict


def _state(step, model, loss_fn, opt_ae, opt_disc, scaler, config) -> dict:
    """Everything needed to continue a run exactly."""
    return {"step": step, "model": model.state_dict(), "loss": loss_fn.state_dict(),
            "opt_ae": opt_ae.state_dict(), "opt_disc": opt_disc.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "config": to_dict(config)}


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
    tc, lc = config.tokenizer.train, config.tokenizer.loss
    run_dir = Path(out_dir) if out_dir is not None else None
    torch.manual_seed(config.seed)  # identical initial weights on every rank

    train_set, eval_images = build_train_eval_data(config, eval_count=tc.eval_images)
    if not info.is_main:
        dist.barrier()  # rank 0 pretrains and caches the toy networks first
    parts = build_tokenizer_parts(config, info.device)
    if info.is_main:
        dist.barrier()
    dist.broadcast_module(parts.model)
    dist.broadcast_module(parts.loss)
    torch.manual_seed(config.seed * 1000 + info.rank)  # different posterior noise per rank
    model, loss_fn, vfm = parts.model, parts.loss, parts.vfm
    # like LDM and the official VA-VAE, logvar stays at its initial value (not optimised)
    ae_params = list(model.parameters()) + loss_fn.generator_parameters()
    disc_params = loss_fn.discriminator_parameters()
    opt_ae = make_optimizer(ae_params, tc)
    opt_disc = make_optimizer(disc_params, tc, lr=lc.disc_lr)
    scaler = torch.amp.GradScaler(info.device.type, enabled=tc.precision == "fp16")

    start = 0
    if run_dir is not None and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    if ckpt is not None:
        start = _restore(ckpt, model, loss_fn, opt_ae, opt_disc, scaler, info.device)
        if info.is_main:
            print(f"resuming from {ckpt} (step {start})")
    elif config.tokenizer.init_from is not None:
        source = _initialise(config, model, loss_fn, info.device, Path(init_dir) if init_dir is not None else None)
        if info.is_main:
            print(f"initialised from {source} (tokenizer.init_from={config.tokenizer.init_from})")
    elif resume and run_dir is not None and info.is_main:
        print(f"no checkpoint in {run_dir}; starting from scratch")
    if run_dir is not None and info.is_main:
        save_config(config, run_dir / CONFIG_FILE)
    logger = JsonlLogger(run_dir / METRICS_FILE if (run_dir is not None and info.is_main) else None)
    if start and info.is_main:
        logger.truncate_after(start)
    elif info.is_main and logger.path is not None and logger.path.exists():
        logger.path.unlink()

    batches = StepBatches(len(train_set), tc.batch_size, seed=config.data.seed + config.seed,
                          rank=info.rank, world_size=info.world_size, hflip=config.data.hflip,
                          crop_seeds=config.data.crop == "random" and config.data.source == "imagefolder")
    per_rank, accum, _ = batch_plan(tc.batch_size, info.world_size, tc.micro_batch)
    if accum > 1:  # the adaptive GAN and VF weights are per-batch gradient ratios; accumulation would change them
        raise ConfigError(f"tokenizer.train.micro_batch={tc.micro_batch} would accumulate {accum} micro-batches, "
                          "which only the DiT stage supports; set it to 0 and use more GPUs or a smaller "
                          "tokenizer.train.batch_size")
    if info.is_main:
        print(f"effective batch {tc.batch_size} = {info.world_size} rank(s) x {per_rank}; peak lr {tc.lr:g}")
    loader = parts.make_loader(train_set, batches, start, tc.steps)
    if tc.progress and info.is_main and info.device.type == "cpu" and start < tc.steps:
        from ..estimate import describe_estimate

        print(describe_estimate(config, "tokenizer", start_step=start))
    if config.tokenizer.probe.every and probe is None and info.is_main:
        print("note: tokenizer.probe.every is set but no probe was passed to train_tokenizer; nothing is probed "
              "(pass probe=vavae_lab.pipeline.tokenizer_probe(config))")
    meter, t_start = Throughput(), time.perf_counter()
    bar = tqdm(total=tc.steps, initial=start, desc=f"tokenizer[{config.name}]",
               disable=not (tc.progress and info.is_main), dynamic_ncols=True)
    model.train()
    loss_fn.train()
    last_good = ckpt
    for step in range(start, tc.steps):
        images = next(loader).to(info.device, non_blocking=True)
        lr = learning_rate(tc, step)
        set_lr(opt_ae, lr)
        set_lr(opt_disc, lc.disc_lr or lr)

        with autocast(info.device, tc.precision):
            recon, posterior, z = model(images)
            features = vfm(images) if vfm is not None else None
            loss, logs = loss_fn.generator_loss(images, recon, posterior, step,
                                                enc_last_layer=model.encoder_last_layer(),
                                                dec_last_layer=model.decoder_last_layer(), z=z, features=features)
        bad = dist.broadcast_flag(not torch.isfinite(loss).item(), info.device)
        if bad:
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

        done = step + 1
        meter.add(tc.batch_size)
        if info.is_main and (done % tc.log_every == 0 or done == tc.steps):
            record = {"step": done, "lr": lr, "img_per_s": meter.rate(), **logs}
            logger.log(record)
            bar.set_postfix(loss=f"{record.get('total', loss.item()):.4g}", refresh=False)
        bar.update(1)
        if tc.eval_every and done % tc.eval_every == 0 and done != tc.steps and info.is_main:
            logger.log({"step": done, **parts.evaluate(model, eval_images)})
        every = config.tokenizer.probe.every
        if probe is not None and every and (done % every == 0 or done == tc.steps):
            if info.enabled:  # the probe trains a DiT in this process; under torchrun it would deadlock
                if info.is_main and done == every:
                    print("tokenizer.probe is skipped under torchrun; run it on a saved tokenizer instead")
            else:
                logger.log({"step": done, **probe(model)})
                model.train()
        if run_dir is not None and (done % tc.ckpt_every == 0 or done == tc.steps):
            if info.is_main:
                path = checkpoint_path(run_dir, done)
                atomic_save(_state(done, model, loss_fn, opt_ae, opt_disc, scaler, config), path)
                prune_checkpoints(run_dir, tc.keep_checkpoints)
                last_good = path
            dist.barrier()
    bar.close()

    history = {"train": [r for r in logger.records if "img_per_s" in r], "eval": [],
               "probe": [r for r in logger.records if "probe_gfid" in r],
               "run_dir": str(run_dir) if run_dir else None, "wall_time_s": time.perf_counter() - t_start}
    if info.is_main:
        final = {"step": tc.steps, **parts.evaluate(model, eval_images)}
        logger.log(final)
        history["eval"] = [r for r in logger.records if "psnr" in r]
        if run_dir is not None:
            atomic_save({"model": model.state_dict(), "config": to_dict(config)}, run_dir / WEIGHTS_FILE["tokenizer"])
            (run_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    dist.barrier()
    model.eval()
    return TrainResult(model, history)
