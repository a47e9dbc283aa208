"""`sample` under torchrun: ranks share the index range and write the PNGs one process writes; resume; .npz."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from vavae_lab import generate
from vavae_lab.checkpoint import atomic_save
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import DataError
from vavae_lab.generate import global_batches, initial_noise, rank_batches, rank_share, sample_to_folder
from vavae_lab.metrics.samples_io import GRID_NAME, LABELS_NAME, load_samples, sample_files
from vavae_lab.presets import get_preset
from vavae_lab.build import build_autoencoder
from vavae_lab.build import build_dit_for

TINY = ["device=cpu", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4", "sample.steps=2",
        "sample.num_samples=10", "metrics.toy.feature_dim=2", "sample.batch_size=3", "sample.cfg_scale=1.5"]
CLASSES = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A random tiny tokenizer run and a random (untrained) toy DiT run with its latent statistics."""
    root = tmp_path_factory.mktemp("sharded")
    config = apply_overrides(get_preset("smoke"), TINY)
    torch.manual_seed(0)
    tokenizer = build_autoencoder(config)
    atomic_save({"model": tokenizer.state_dict(), "config": to_dict(config)}, root / "tok" / "tokenizer.pt")
    shape = (4, 8, 8)
    dit = build_dit_for(config, shape, CLASSES)
    atomic_save({"model": dit.state_dict(), "ema": dit.state_dict(), "config": to_dict(config),
                 "latent_shape": list(shape), "num_classes": CLASSES, "latent_mean": torch.zeros(1, 4, 1, 1),
                 "latent_std": torch.full((1, 4, 1, 1), 0.5), "tokenizer_sha256": None, "tokenizer_dir": None},
                root / "dit" / "dit.pt")
    return config, root


def _cli(runs, out, *extra, ranks=1):
    """Run `sample` in a fresh process (one thread), under torchrun with `ranks` processes when ranks > 1."""
    _, root = runs
    launcher = ["-m", "vavae_lab"]
    if ranks > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port),
                    *launcher]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, *launcher, "sample", "--preset", "smoke", "--dit", str(root / "dit"),
           "--tokenizer", str(root / "tok"), "--out", str(out), *extra, *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_batches_split_into_contiguous_shares():
    assert global_batches(10, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    shares = [rank_batches(10, 3, r, 3) for r in range(3)]
    assert shares == [[(0, 3)], [(3, 6)], [(6, 9), (9, 10)]]
    assert rank_batches(2, 3, 1, 2) == [(0, 2)] and rank_batches(2, 3, 0, 2) == []
    assert [rank_share(list(range(5)), r, 2) for r in range(2)] == [[0, 1], [2, 3, 4]]
    # a sample's noise does not depend on which batch (or rank) draws it
    assert torch.equal(initial_noise(range(3, 6), (2, 2, 2), 7)[1], initial_noise([4], (2, 2, 2), 7)[0])
    assert not torch.equal(initial_noise([4], (2, 2, 2), 7), initial_noise([4], (2, 2, 2), 8))


def test_a_rank_share_then_a_resume_equals_one_process(runs, tmp_path, monkeypatch):
    from vavae_lab import dist

    config, root = runs
    sample_to_folder(config, root / "dit", root / "tok", tmp_path / "one", progress=False)
    info = dist.DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    with monkeypatch.context() as patch:  # rank 1 of 2 alone: its batches [6, 9) and [9, 10), no grid
        patch.setattr(dist, "setup", lambda device="auto": info)
        sample_to_folder(config, root / "dit", root / "tok", tmp_path / "two", progress=False)
    assert [p.name[:6] for p in sample_files(tmp_path / "two")] == [f"{i:06d}" for i in range(6, 10)]
    assert not (tmp_path / "two" / GRID_NAME).exists()
    sample_to_folder(config, root / "dit", root / "tok", tmp_path / "two", progress=False)
    one, two = sample_files(tmp_path / "one"), sample_files(tmp_path / "two")
    assert [p.name for p in one] == [p.name for p in two] and len(two) == 10
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert (tmp_path / "two" / LABELS_NAME).read_bytes() == (tmp_path / "one" / LABELS_NAME).read_bytes()


@pytest.mark.slow
def test_two_ranks_write_the_same_pngs_as_one(runs, tmp_path):
    _cli(runs, tmp_path / "one")
    done = _cli(runs, tmp_path / "two", "--npz", ranks=2)
    assert done.stdout.count("samples and grid.png in") == 1  # rank 0 reports
    one, two = sample_files(tmp_path / "one"), sample_files(tmp_path / "two")
    assert [p.name for p in two] == [f"{i:06d}_c{i % CLASSES}.png" for i in range(10)]
    assert [p.name for p in one] == [p.name for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))
    assert (tmp_path / "two" / GRID_NAME).read_bytes() == (tmp_path / "one" / GRID_NAME).read_bytes()

    path = tmp_path / "two" / "samples_10x32x32x3.npz"
    with np.load(path) as data:
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (10, 32, 32, 3)
        assert data["arr_1"].tolist() == [i % CLASSES for i in range(10)]
    images, labels = load_samples(tmp_path / "two")
    assert torch.equal(load_samples(path)[0], images) and torch.equal(load_samples(path)[1], labels)


def test_resume_samples_only_the_missing_batches(runs, tmp_path, monkeypatch):
    config, root = runs
    out = tmp_path / "s"
    sample_to_folder(config, root / "dit", root / "tok", out, progress=False)
    before = {p.name: p.read_bytes() for p in sample_files(out)}
    inodes = {p.name: p.stat().st_ino for p in sample_files(out)}
    (out / "000004_c0.png").unlink()
    (out / GRID_NAME).unlink()

    calls = []
    original = generate.sample_latents
    monkeypatch.setattr(generate, "sample_latents", lambda dit, y, *a, **k: calls.append(y.tolist()) or
                        original(dit, y, *a, **k))
    sample_to_folder(config, root / "dit", root / "tok", out, progress=False)
    assert calls == [[3, 0, 1]]  # only batch [3, 6) ran
    assert {p.name: p.read_bytes() for p in sample_files(out)} == before
    kept = {p.name: p.stat().st_ino for p in sample_files(out) if p.name != "000004_c0.png"}
    assert all(inodes[name] == ino for name, ino in kept.items())  # untouched, not rewritten
    assert (out / GRID_NAME).is_file() and (out / LABELS_NAME).is_file()

    calls.clear()
    grown = apply_overrides(config, ["sample.num_samples=12"])
    sample_to_folder(grown, root / "dit", root / "tok", out, progress=False)
    assert calls == [[1, 2, 3]]  # batch [9, 12) holds the two new samples; 9 is redone, not rewritten
    assert len(sample_files(out)) == 12


def test_resume_refuses_a_different_run_or_foreign_pngs(runs, tmp_path):
    config, root = runs
    out = tmp_path / "s"
    small = apply_overrides(config, ["sample.num_samples=2"])
    sample_to_folder(small, root / "dit", root / "tok", out, progress=False)
    with pytest.raises(DataError, match=r"different sampling run \(seed: 0 -> 5\)"):
        sample_to_folder(apply_overrides(small, ["sample.seed=5"]), root / "dit", root / "tok", out)
    with pytest.raises(DataError, match="not samples 0..0 of this run"):
        sample_to_folder(apply_overrides(small, ["sample.num_samples=1"]), root / "dit", root / "tok", out)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "cat.png").write_bytes((out / "000000_c0.png").read_bytes())
    with pytest.raises(DataError, match="no sampling.json"):
        sample_to_folder(small, root / "dit", root / "tok", tmp_path / "old")
