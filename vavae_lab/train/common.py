"""Pieces every training loop shares: deterministic batches, LR schedule, optimisers, JSONL log, NaN guard."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from ..checkpoint import latest_checkpoint
from ..config import TrainConfig
from ..dist import barrier
from ..errors import ConfigError


class StepBatches:
    """Global batches as a pure function of the step, so a resumed run sees exactly the same data.

    Each epoch is a permutation seeded by (seed, epoch); each step also draws a horizontal-flip mask
    seeded by (seed, step), and with `crop_seeds` one random-crop seed per image (the official tokenizer
    crop, data.crop=random). Rank r takes its slice of the global batch.
    """

    def __init__(self, num_items: int, global_batch: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 hflip: bool = True, crop_seeds: bool = False):
        if global_batch % world_size:
            raise ConfigError(f"batch_size={global_batch} is not divisible by the {world_size} processes; "
                              f"use a multiple of {world_size}")
        if num_items < global_batch:
            raise ConfigError(f"the dataset has {num_items} images, fewer than batch_size={global_batch}")
        self.num_items, self.global_batch = num_items, global_batch
        self.seed, self.rank, self.world_size, self.hflip = seed, rank, world_size, hflip
        self.crop_seeds = crop_seeds
        self.per_rank = global_batch // world_size
        self.steps_per_epoch = num_items // global_batch
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.num_items, generator=g), epoch
        return self._perm

    def indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(item indices, flip flags) of this rank's share of the global batch at `step`."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        start = pos * self.global_batch + self.rank * self.per_rank
        idx = self._permutation(epoch)[start:start + self.per_rank]
        if self.hflip:
            g = torch.Generator().manual_seed(self.seed * 7_919 + step)
            flips = torch.rand(self.global_batch, generator=g)[self.rank * self.per_rank:][:self.per_rank] < 0.5
        else:
            flips = torch.zeros(self.per_rank, dtype=torch.bool)
        return idx, flips

    def crop_seed_list(self, step: int) -> list[int]:
        """This rank's random-crop seeds at `step`, one per image, drawn from (seed, step)."""
        g = torch.Generator().manual_seed(self.seed * 104_729 + step)
        seeds = torch.randint(0, 2 ** 31 - 1, (self.global_batch,), generator=g)
        return seeds[self.rank * self.per_rank:][:self.per_rank].tolist()

    def sampler(self, start_step: int, end_step: int) -> Iterator[list[tuple]]:
        """A batch sampler for a DataLoader: lists of (index, flip) keys, or (index, flip, crop seed) with
        crop_seeds, from start_step to end_step."""
        for step in range(start_step, end_step):
            idx, flips = self.indices(step)
            if self.crop_seeds:
                yield list(zip(idx.tolist(), flips.tolist(), self.crop_seed_list(step)))
            else:
                yield list(zip(idx.tolist(), flips.tolist()))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ConfigError(f"train.lr_schedule={cfg.lr_schedule!r}; use constant or cosine")


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig, lr: float | None = None):
    """Adam or AdamW with the configured betas and weight decay."""
    params = [p for p in params if p.requires_grad]
    kwargs = dict(lr=lr or cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, **kwargs)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    raise ConfigError(f"train.optimizer={cfg.optimizer!r}; use adam or adamw")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def allreduce_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average gradients over ranks in one flat buffer (no-op in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


class JsonlLogger:
    """Appends one JSON record per line to metrics.jsonl (main rank only), and keeps them in memory."""

    def __init__(self, path: Path | None):
        self.path = path
        self.records: list[dict] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict) -> None:
        """Store a record and append it to the file."""
        record = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records logged after `step` (they belong to the part of a run a resume repeats)."""
        if self.path is None or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))
        self.records = [json.loads(line) for line in kept]


@dataclass
class RunFiles:
    """Where a training loop writes (a run folder) and what it records there: the config dict every checkpoint and
    the final weights keep (what `runs.load_tokenizer` / `load_dit` rebuild the model from), the Config saved as
    config.yaml (None: none is written), and for a DiT the steps whose EMA weights are kept as snapshots."""

    folder: Path
    config_record: dict
    config: object | None = None
    snapshots: tuple[int, ...] = ()


def prepare_run(files: RunFiles | None, resume: bool, info, restore: Callable[[Path], int], *,
                init: Callable[[], str] | None = None) -> tuple[int, Path | None, "JsonlLogger"]:
    """Make the run folder; `restore` its newest checkpoint when resuming, else `init()` when given (a stage chain);
    save config.yaml; a metrics logger kept up to the start step. Returns (start step, checkpoint, logger)."""
    from ..config import save_config
    from ..runs import CONFIG_FILE, METRICS_FILE

    run_dir = files.folder if files is not None else None
    if run_dir is not None and info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    ckpt = latest_checkpoint(run_dir) if (resume and run_dir is not None) else None
    start = 0
    if ckpt is not None:
        start = restore(ckpt)
        if info.is_main:
            print(f"resuming from {ckpt} (step {start})")
    elif init is not None:
        loaded = init()
        if info.is_main:
            print(f"initialised from {loaded}")
    elif resume and run_dir is not None and info.is_main:
        print(f"no checkpoint in {run_dir}; starting from scratch")
    if run_dir is not None and info.is_main and files.config is not None:
        save_config(files.config, run_dir / CONFIG_FILE)
    logger = JsonlLogger(run_dir / METRICS_FILE if (run_dir is not None and info.is_main) else None)
    if start and info.is_main:
        logger.truncate_after(start)
    elif info.is_main and logger.path is not None and logger.path.exists():
        logger.path.unlink()
    return start, ckpt, logger


class Throughput:
    """Images per second over the last logging window."""

    def __init__(self):
        self.t0, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        """Count `n` more images."""
        self.n += n

    def rate(self) -> float:
        """Images per second since the last call, then reset."""
        now = time.perf_counter()
        rate = self.n / max(now - self.t0, 1e-9)
        self.t0, self.n = now, 0
        return rate


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers are copied)."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def batch_plan(global_batch: int, world_size: int, micro_batch: int = 0) -> tuple[int, int, int]:
    """(per-rank batch, accumulation steps, micro-batch size) for a global batch split over `world_size` ranks.

    micro_batch = 0 means one forward/backward per rank per step; otherwise per_rank / micro_batch micro-batches
    (rounded up) are accumulated before the optimiser step, so the effective batch stays `global_batch`.
    """
    if micro_batch < 0:
        raise ConfigError(f"train.micro_batch={micro_batch}; use 0 (no accumulation) or a positive size")
    per_rank = global_batch // world_size
    micro = per_rank if micro_batch == 0 else min(micro_batch, per_rank)
    return per_rank, math.ceil(per_rank / micro), micro


def backward_in_micro_batches(compute_loss, tensors: tuple[torch.Tensor, ...], steps: int, scaler) -> dict:
    """Backpropagate `compute_loss(*chunk)["loss"]` over `steps` micro-batches, each weighted by its share.

    The summed gradients equal those of one pass over the whole batch (for a per-sample mean loss). Returns the
    outputs merged: per-sample tensors concatenated, scalars averaged with the same weights.
    """
    total = tensors[0].shape[0]
    outputs, weights = [], []
    for chunk in zip(*(t.tensor_split(steps) for t in tensors)):
        if chunk[0].shape[0] == 0:
            continue
        out = compute_loss(*chunk)
        weight = chunk[0].shape[0] / total
        scaler.scale(out["loss"] * weight if steps > 1 else out["loss"]).backward()
        outputs.append(out)
        weights.append(weight)
    if len(outputs) == 1:
        return outputs[0]
    merged = {}
    for key, value in outputs[0].items():
        parts = [o[key].detach() if isinstance(o[key], torch.Tensor) else o[key] for o in outputs]
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            merged[key] = torch.cat(parts)
        else:
            merged[key] = sum(w * p for w, p in zip(weights, parts))
    return merged
