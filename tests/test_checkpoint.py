"""Atomic checkpoint writes, newest-checkpoint lookup, RNG capture and deterministic batches."""
import json
import os
from pathlib import Path

import pytest
import torch

from vavae_lab.checkpoint import (atomic_save, checkpoint_path, latest_checkpoint, load_checkpoint,
                                  prune_checkpoints, rng_state, set_rng_state)
from vavae_lab.errors import CheckpointError, ConfigError
from vavae_lab.train.common import StepBatches, learning_rate
from vavae_lab.config import TrainConfig


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.ones(3)}, path)

    def exploding_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary left behind


def test_latest_and_prune(tmp_path):
    for step in (10, 30, 20):
        atomic_save({"step": step}, checkpoint_path(tmp_path, step))
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 30
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000020.pt", "step_00000030.pt"]
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip(tmp_path):
    atomic_save(rng_state(), tmp_path / "rng.pt")
    a = torch.rand(4)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt"))
    assert torch.equal(torch.rand(4), a)


def test_step_batches_are_a_function_of_the_step():
    a, b = StepBatches(100, 8, seed=1), StepBatches(100, 8, seed=1)
    for step in (0, 5, 12, 30):  # 12 steps per epoch: 30 is in the third epoch
        ia, fa = a.indices(step)
        ib, fb = b.indices(step)
        assert torch.equal(ia, ib) and torch.equal(fa, fb)
    epoch0 = torch.cat([a.indices(s)[0] for s in range(12)])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch


def test_ranks_split_the_global_batch():
    full, _ = StepBatches(64, 8, seed=0).indices(3)
    parts = [StepBatches(64, 8, seed=0, rank=r, world_size=2).indices(3)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), full)
    with pytest.raises(ConfigError, match="not divisible"):
        StepBatches(64, 7, seed=0, world_size=2)


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 10) == pytest.approx(1.0)
    assert learning_rate(cfg, 100) == pytest.approx(0.1)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from vavae_lab.atomic import atomic_write, atomic_write_json

    path = tmp_path / "sub" / "meta.json"
    atomic_write_json(path, {"step": 1})  # creates the folder
    assert json.loads(path.read_text()) == {"step": 1}

    def crash(tmp):
        Path(tmp).write_text('{"step": 2, "half')
        raise KeyboardInterrupt  # an interrupt mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})  # not serialisable: nothing is written
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["meta.json"]  # no temp files left behind


def test_atomic_write_syncs_unless_told_not_to(tmp_path, monkeypatch):
    import vavae_lab.atomic as atomic

    synced = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    atomic.atomic_write_text(tmp_path / "a.txt", "durable")
    atomic.atomic_write(tmp_path / "b.png", lambda tmp: Path(tmp).write_bytes(b"png"), fsync=False)
    assert len(synced) == 1 and (tmp_path / "b.png").read_bytes() == b"png"


def test_held_makes_a_second_maker_wait_and_then_find_it_made(tmp_path):
    """Two jobs that need the same run: the second blocks while the first makes it, then does not make it again."""
    import threading

    from vavae_lab.atomic import held

    target, made = tmp_path / "cache" / "run", []
    inside, go = threading.Event(), threading.Event()

    def first():
        with held(target):
            inside.set()
            go.wait(10)
            target.mkdir()
            made.append("first")

    def second():
        with held(target):
            if not target.exists():
                made.append("second")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)
    assert b.is_alive(), "the second job did not wait for the lock"
    go.set()
    a.join(10)
    b.join(10)
    assert made == ["first"] and not b.is_alive()
    assert sorted(p.name for p in target.parent.iterdir()) == [".run.lock", "run"]  # the lock is hidden beside it
