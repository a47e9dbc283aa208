"""Convergence curves: gFID along one DiT run, from the EMA snapshots it kept (Fig. 4a/b, notebook 07)."""
from __future__ import annotations

from pathlib import Path

from . import pipeline
from .config import Config
from .errors import CheckpointError, ConfigError
from .keys import cached_result, save_result, stage_dir
from .runs import read_history


def log_steps(total: int, points: int = 4) -> tuple[int, ...]:
    """Log-spaced steps ending at `total`, halving from it: (75, 150, 300, 600) for 600 and 4 points."""
    return tuple(sorted({max(1, total // 2 ** k) for k in range(points)}))


def curve_steps(config: Config) -> tuple[int, ...]:
    """The steps of the config's convergence curve: dit.snapshots before the last step, then the last."""
    last = config.dit.train.steps
    return (*sorted({s for s in config.dit.snapshots if s < last}), last)


def dit_snapshots(config: Config, root: str | Path | None = None, *, progress: bool = False) -> Path:
    """The DiT run folder of `config`, holding a snapshot after every step of config.dit.snapshots.

    dit.snapshots is in no key, so the snapshot run is the DiT stage's own run: on a miss it is trained with its
    snapshots. A run trained (or restored from the pack) without some of them is trained again with the same config
    in its snapshot_run/ subfolder (resumable) up to the last missing step, which hands its snapshots over and is
    removed: the cached dit.pt is never rewritten (the retrain is bit-identical to it on a CPU,
    tests/test_convergence.py).
    """
    import shutil

    from .checkpoint import list_checkpoints

    run = stage_dir(config, "dit", root)
    pipeline.dit(config, root, progress=progress)
    scratch = run / "snapshot_run"
    missing = _take_snapshots(scratch, run, curve_steps(config)[:-1])
    if missing:
        if [s for s, _ in list_checkpoints(scratch) if s > missing[0]]:
            shutil.rmtree(scratch)  # it went past a step it did not keep (an earlier, shorter list of snapshots)
        print(f"training dit {run.name} again in {scratch.name}/ up to step {missing[-1]} for its snapshots at "
              f"steps {missing} (it was trained without them; its dit.pt stays)")
        pipeline.train_dit_into(config, root, scratch, progress, until=missing[-1])
        missing = _take_snapshots(scratch, run, missing)
        if missing:
            raise CheckpointError(f"the snapshot run {scratch} kept no snapshot at steps {missing}; delete it and rerun")
    if scratch.exists():
        shutil.rmtree(scratch)
    return run


def _take_snapshots(scratch: Path, run: Path, steps) -> list[int]:
    """Move the snapshots at `steps` that `scratch` kept into `run`; the steps `run` still lacks, in order."""
    from .checkpoint import snapshot_path

    for s in steps:
        if not snapshot_path(run, s).exists() and snapshot_path(scratch, s).exists():
            snapshot_path(run, s).parent.mkdir(parents=True, exist_ok=True)
            snapshot_path(scratch, s).replace(snapshot_path(run, s))
    return sorted(s for s in steps if not snapshot_path(run, s).exists())


def snapshot_generation(config: Config, step: int, root: str | Path | None = None, *, n: int | None = None,
                        device=None, progress: bool = False) -> dict:
    """`generation` of the config's DiT after `step` of its training steps (a step of `curve_steps`), with the
    step and the training loss logged by then; cached as JSON keyed by the DiT key, the sampler, n and the step.
    The last step is the finished DiT, so its result is `generation`'s own."""
    from .runs import load_dit

    n = n or config.sample.num_samples
    if step not in curve_steps(config):
        raise ConfigError(f"step {step} is not a step of this DiT's convergence curve {list(curve_steps(config))}; "
                          f"add it to dit.snapshots (below dit.train.steps={config.dit.train.steps})")
    if step == config.dit.train.steps:
        return {**pipeline.generation(config, root, n=n, device=device, progress=progress), "step": step}
    path, cached = cached_result(config, "generation", root, n=n, step=step)
    if cached is not None:
        return cached
    tok, _ = pipeline.tokenizer(config, root)
    run = dit_snapshots(config, root, progress=progress)
    model, _ = load_dit(run, step=step)
    history = read_history(run)
    logged = [r["loss"] for r in history["train"] if r["step"] <= step]
    out = {**pipeline.evaluate_dit(config, tok, model, n=n, device=device, progress=progress), "step": step,
           "dit_loss": logged[-1] if logged else None}
    return save_result(config, "generation", path, out, n=n, step=step)


def convergence(config: Config, root: str | Path | None = None, *, n: int | None = None, device=None,
                progress: bool = False) -> list[dict]:
    """gFID (with IS, precision, recall, class accuracy) after each step of `curve_steps(config)`, from one DiT
    run's snapshots (`snapshot_generation`: each point cached, nothing retrained per point)."""
    return [snapshot_generation(config, s, root, n=n, device=device, progress=progress) for s in curve_steps(config)]
