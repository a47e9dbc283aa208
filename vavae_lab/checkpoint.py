"""Atomic checkpoints with full training state, newest-checkpoint lookup and RNG capture."""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .errors import CheckpointError

_PATTERN = re.compile(r"^step_(\d+)\.pt$")


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """The file name of the checkpoint written after `step` optimisation steps."""
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path, folder: str = "checkpoints") -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in a run directory (its `folder`), oldest first."""
    where = Path(run_dir) / folder
    if not where.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in where.iterdir() if (m := _PATTERN.match(p.name))]
    return sorted(found)


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """The file of the EMA weights a DiT run keeps after `step` steps (config dit.snapshots; never pruned)."""
    return Path(run_dir) / "snapshots" / f"step_{step:08d}.pt"


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every snapshot a DiT run kept, oldest first."""
    return list_checkpoints(run_dir, "snapshots")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint safely (weights_only); a missing or corrupt file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file; torch's text runs over many lines
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        if "Weights only load failed" in first or len(first) > 160:  # torch's advice to unpickle unsafely: not ours
            first = "not a file of tensors torch.load reads safely"
        raise CheckpointError(f"checkpoint {path} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: "
                              f"{first}); if a run was cut off while writing it, delete it to resume from the "
                              "previous one") from exc


def rng_state() -> dict:
    """The state of every random generator the training loop touches."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the generators captured by `rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), int(np_state["pos"]),
                         int(np_state["has_gauss"]), float(np_state["cached"])))
    random.setstate((int(state["python"]["version"]), tuple(state["python"]["state"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict:
    """numpy's global RNG state as tensors (so weights_only loading accepts it)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
            "has_gauss": has_gauss, "cached": cached}


def _python_state() -> dict:
    """Python's `random` state as tensors."""
    version, internal, _ = random.getstate()
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64)}
