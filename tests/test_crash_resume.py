"""`kill -9` at a random moment, then resume: training ends bit-identical, extraction keeps its finished shards."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vavae_lab.checkpoint import atomic_save, latest_checkpoint, list_checkpoints, load_checkpoint
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.latents import extract_latents
from vavae_lab.latents import read_meta
from vavae_lab.presets import get_preset
from vavae_lab.build import build_autoencoder
from vavae_lab.train.dit import train_dit

CKPT_EVERY = 5
TINY = ["data.num_train=1024", "data.num_test=16", "device=cpu", "latents.shard_size=32", "latents.batch_size=16",
        "latents.stats_count=512", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4",
        "dit.train.steps=60", f"dit.train.ckpt_every={CKPT_EVERY}", "dit.train.log_every=1",
        "dit.train.batch_size=16", "dit.train.keep_checkpoints=0", "dit.train.progress=false"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A random tiny tokenizer, its latent cache made in this process (the reference), and the environment."""
    root = tmp_path_factory.mktemp("crash")
    env = dict(os.environ, VAVAE_LAB_DATA=str(root / "data"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               VAVAE_LAB_OFFLINE="1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", env["VAVAE_LAB_DATA"])
        config = apply_overrides(get_preset("smoke"), TINY)
        torch.manual_seed(0)
        atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                    root / "tok" / "tokenizer.pt")
        extract_latents(config, root / "tok", root / "lat", progress=False)
    return config, root, env


def _start(args, env, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:  # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen([sys.executable, "-m", "vavae_lab", *map(str, args)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env)


def _kill_after(proc: subprocess.Popen, ready, log: Path) -> float:
    """Wait until `ready()` holds, then SIGKILL the process after a random delay; returns the delay."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the first checkpoint or shard"
        time.sleep(0.01)
    delay = random.uniform(0.0, 0.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run finished before the kill (delay {delay:.2f} s)"
    return delay


def _run(args, env, log: Path) -> str:
    proc = _start(args, env, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


def test_killed_dit_training_resumes_to_the_uninterrupted_parameters(prepared, tmp_path):
    config, root, env = prepared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", env["VAVAE_LAB_DATA"])
        train_dit(config, root / "lat", tmp_path / "straight")
    run = tmp_path / "killed"
    args = ["train-dit", "--preset", "smoke", "--latents", root / "lat", "--out", run, *TINY]
    proc = _start(args, env, tmp_path / "first.log")
    delay = _kill_after(proc, lambda: latest_checkpoint(run) is not None, tmp_path / "first.log")

    for _, path in list_checkpoints(run):  # a kill inside a checkpoint write leaves only a stray temp file
        load_checkpoint(path)
    saved = list_checkpoints(run)[-1][0]
    logged = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip())
    assert logged - saved <= CKPT_EVERY, (logged, saved, delay)  # at most one checkpoint interval is lost
    assert not (run / "dit.pt").exists()

    out = _run(["train-dit", "--latents", root / "lat", "--out", run, "--resume"], env, tmp_path / "resume.log")
    assert f"(step {saved})" in out
    straight = torch.load(tmp_path / "straight" / "dit.pt", weights_only=True)
    resumed = torch.load(run / "dit.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} differs (killed after {delay:.2f} s)"


def test_killed_extraction_keeps_finished_shards_and_matches(prepared, tmp_path):
    config, root, env = prepared
    out = tmp_path / "lat"
    args = ["extract-latents", "--preset", "smoke", "--tokenizer", root / "tok", "--out", out, *TINY]
    proc = _start(args, env, tmp_path / "first.log")
    delay = _kill_after(proc, lambda: (out / "shard_00000.safetensors").exists(), tmp_path / "first.log")
    assert not read_meta(out)["complete"]
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.safetensors")}
    assert kept and len(kept) < len(read_meta(root / "lat")["shards"]), (sorted(kept), delay)

    _run(args, env, tmp_path / "resume.log")
    assert read_meta(out)["complete"]
    for name, mtime in kept.items():  # finished shards are not encoded again
        assert (out / name).stat().st_mtime_ns == mtime, name
    for name in read_meta(root / "lat")["shards"] + ["stats.safetensors"]:
        reference, resumed = load_file(root / "lat" / name), load_file(out / name)
        assert reference.keys() == resumed.keys()
        for key in reference:
            assert torch.equal(reference[key], resumed[key]), f"{name}:{key} (killed after {delay:.2f} s)"


TOK = ["data.num_train=256", "data.num_test=16", "device=cpu", "tokenizer.model.embed_dim=4",
       "tokenizer.model.z_channels=4", "tokenizer.vf.enabled=false", "tokenizer.loss.disc_start=10",
       "tokenizer.train.steps=40", f"tokenizer.train.ckpt_every={CKPT_EVERY}", "tokenizer.train.log_every=1",
       "tokenizer.train.batch_size=8", "tokenizer.train.keep_checkpoints=0", "tokenizer.train.eval_images=0",
       "tokenizer.train.progress=false"]


def test_killed_tokenizer_training_resumes_to_the_uninterrupted_parameters(prepared, tmp_path):
    _, _, env = prepared
    _run(["train-tokenizer", "--preset", "smoke", "--out", tmp_path / "straight", *TOK], env, tmp_path / "straight.log")
    run = tmp_path / "killed"
    proc = _start(["train-tokenizer", "--preset", "smoke", "--out", run, *TOK], env, tmp_path / "first.log")
    delay = _kill_after(proc, lambda: latest_checkpoint(run) is not None, tmp_path / "first.log")
    for _, path in list_checkpoints(run):
        load_checkpoint(path)
    saved = list_checkpoints(run)[-1][0]
    assert not (run / "tokenizer.pt").exists()

    out = _run(["train-tokenizer", "--out", run, "--resume"], env, tmp_path / "resume.log")
    assert f"(step {saved})" in out, out[-2000:]
    straight = torch.load(tmp_path / "straight" / "tokenizer.pt", weights_only=True)
    resumed = torch.load(run / "tokenizer.pt", weights_only=True)
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():  # the discriminator starts at step 10, inside the kill window
        assert torch.equal(value, resumed["model"][key]), f"model.{key} differs (killed after {delay:.2f} s)"
