"""Gradient accumulation: micro-batches give the same gradients and parameters as one full batch."""
import copy

import pytest
import torch

from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import ConfigError
from vavae_lab.presets import get_preset
from vavae_lab.train.common import backward_in_micro_batches, batch_plan


def test_batch_plan_splits_the_global_batch():
    assert batch_plan(1024, 8) == (128, 1, 128)  # paper: 8 GPUs x 128, no accumulation
    assert batch_plan(1024, 8, 32) == (128, 4, 32)
    assert batch_plan(1024, 1, 48) == (1024, 22, 48)  # ceil(1024 / 48); the last micro-batch is smaller
    assert batch_plan(64, 2, 500) == (32, 1, 32)
    with pytest.raises(ConfigError, match="micro_batch"):
        batch_plan(64, 1, -1)


def _loss(model):
    def compute(x, y):
        per_sample = ((model(x) - y) ** 2).mean(dim=1)
        return {"loss": per_sample.mean(), "per_sample": per_sample, "mse": per_sample.mean()}
    return compute


@pytest.mark.parametrize("steps", [2, 3])
def test_accumulated_step_equals_full_batch_step(steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x, y = torch.randn(10, 6), torch.randn(10, 3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    results = []
    for n in (1, steps):
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        opt.zero_grad()
        out = backward_in_micro_batches(_loss(m), (x, y), n, scaler)
        grads = [p.grad.clone() for p in m.parameters()]
        opt.step()
        results.append((out, grads, [p.detach().clone() for p in m.parameters()]))
    (full, g1, p1), (acc, g2, p2) = results
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(acc["loss"], full["loss"].detach())
    torch.testing.assert_close(acc["per_sample"], full["per_sample"].detach())
    torch.testing.assert_close(acc["mse"], full["mse"].detach())


def test_train_dit_with_micro_batches_logs_the_effective_batch(tmp_path, capsys):
    from vavae_lab.checkpoint import atomic_save
    from vavae_lab.latents import extract_latents
    from vavae_lab.build import build_autoencoder
    from vavae_lab.train.dit import train_dit

    config = apply_overrides(get_preset("smoke"), [
        "data.num_train=64", "data.num_test=16", "device=cpu", "latents.shard_size=64", "latents.stats_count=64",
        "latents.batch_size=32", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4",
        "dit.train.steps=2", "dit.train.log_every=1", "dit.train.batch_size=16", "dit.train.micro_batch=6",
        "dit.train.progress=false"])
    torch.manual_seed(0)
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                tmp_path / "tok" / "tokenizer.pt")
    extract_latents(config, tmp_path / "tok", tmp_path / "lat", progress=False)
    _, history = train_dit(config, tmp_path / "lat")
    assert "effective batch 16 = 1 rank(s) x 16 in 3 micro-batches of 6" in capsys.readouterr().out
    assert [r["step"] for r in history["train"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history["train"])
