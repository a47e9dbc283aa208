"""End-to-end DiT training on a tiny latent cache: run dir, exact resume, NaN stop, 2-process gloo DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from vavae_lab.checkpoint import latest_checkpoint, load_checkpoint
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import NonFiniteLossError
from vavae_lab.presets import get_preset
from vavae_lab.build import build_autoencoder
from vavae_lab.runs import load_dit
from vavae_lab.train.dit import train_dit

TINY = ["data.num_train=96", "data.num_test=16", "device=cpu", "latents.shard_size=64",
        "latents.stats_count=96", "latents.batch_size=32", "tokenizer.model.embed_dim=4",
        "tokenizer.model.z_channels=4", "dit.train.steps=8", "dit.train.ckpt_every=4", "dit.train.log_every=2",
        "dit.train.batch_size=16", "dit.train.progress=false", "sample.num_samples=20", "metrics.toy.feature_dim=2", "sample.batch_size=10",
        "sample.steps=4"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny random tokenizer run and its latent cache (shared by the tests of this module)."""
    from vavae_lab.checkpoint import atomic_save
    from vavae_lab.latents import extract_latents

    root = tmp_path_factory.mktemp("dit")
    config = apply_overrides(get_preset("smoke"), TINY)
    torch.manual_seed(0)
    tok_dir = root / "tok"
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                tok_dir / "tokenizer.pt")
    extract_latents(config, tok_dir, root / "latents", progress=False)
    return config, tok_dir, root / "latents"


def test_train_dit_logs_loss_by_t_and_loads_back(cache, tmp_path):
    config, _, latents = cache
    model, history = train_dit(config, latents, tmp_path / "run")
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(len(r["loss_by_t"]) >= 1 and all(k.startswith("t") for k in r["loss_by_t"]) for r in records)
    loaded, loaded_config = load_dit(tmp_path / "run")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert loaded_config == config


def test_dit_resume_continues_exactly(cache, tmp_path):
    config, _, latents = cache
    straight, _ = train_dit(config, latents, tmp_path / "a")
    train_dit(config, latents, tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "step_00000008.pt").unlink()
    (tmp_path / "b" / "dit.pt").unlink()
    resumed, _ = train_dit(config, latents, tmp_path / "b", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_dit_seed_sets_the_dits_own_randomness(cache, tmp_path):
    config, _, latents = cache
    default, _ = train_dit(config, latents)
    same, _ = train_dit(apply_overrides(config, ["dit.seed=0"]), latents)  # = the top-level seed 0
    other, _ = train_dit(apply_overrides(config, ["dit.seed=1"]), latents)
    for k, v in default.state_dict().items():
        assert torch.equal(v, same.state_dict()[k]), k
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in default.state_dict().items())


def test_dit_nan_stops_and_keeps_last_good(cache, tmp_path, monkeypatch):
    from vavae_lab.diffusion import transport

    original = transport.RectifiedFlow.loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 6:  # step 5
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(transport.RectifiedFlow, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*step_00000004\.pt"):
        train_dit(cache[0], cache[2], tmp_path / "run")
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["step"] == 4


@pytest.mark.slow
def test_two_process_gloo_dit(cache, tmp_path):
    config, _, latents = cache
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "vavae_lab", "train-dit", "--preset", "smoke",
                          "--latents", str(latents), "--out", str(tmp_path / "run"), *TINY],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["step"] == 8


def test_fit_dit_trains_a_model_built_without_a_config(cache):
    """The loop takes built parts: a DiT, a transport and the latents made by hand train exactly as train_dit does."""
    from vavae_lab.config import TrainConfig
    from vavae_lab.diffusion.lightningdit import build_dit
    from vavae_lab.diffusion.transport import build_transport
    from vavae_lab.latents.dataset import LatentDataset
    from vavae_lab.train.dit import fit_dit

    config, _, latents = cache
    via_config, _ = train_dit(config, latents)
    data = LatentDataset(latents)
    m, t = config.dit.model, config.dit.transport
    torch.manual_seed(0)
    model = build_dit(m.size, input_size=data.latent_shape[1], in_channels=data.latent_shape[0],
                      num_classes=data.num_classes, mlp=m.mlp, norm=m.norm, pos=m.pos, qk_norm=m.qk_norm,
                      adaln_shift=m.adaln_shift, class_dropout=m.class_dropout, mlp_ratio=m.mlp_ratio)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    transport = build_transport(t.path, t_sampling=t.t_sampling, logit_mean=t.logit_mean, logit_std=t.logit_std,
                                cos_weight=t.cos_weight)
    train = TrainConfig(**{**vars(config.dit.train)})
    by_hand, history = fit_dit(model, transport, data, train, ema_decay=config.dit.ema_decay, seed=0)
    assert [r["step"] for r in history["train"]] == [2, 4, 6, 8]
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # it trained
    for k, v in via_config.state_dict().items():
        assert torch.equal(v, by_hand.state_dict()[k]), k
