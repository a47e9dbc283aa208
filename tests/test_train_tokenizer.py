"""End-to-end tokenizer training: smoke run, exact resume, NaN stop, CLI errors, 2-process gloo DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from vavae_lab.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from vavae_lab.config import apply_overrides
from vavae_lab.errors import NonFiniteLossError
from vavae_lab.presets import get_preset
from vavae_lab.train.tokenizer import train_tokenizer

TINY = ["tokenizer.train.steps=8", "tokenizer.train.ckpt_every=4", "tokenizer.train.log_every=2",
        "tokenizer.train.batch_size=8", "tokenizer.loss.disc_start=2", "tokenizer.train.eval_images=16",
        "tokenizer.train.progress=false", "data.num_train=64", "data.num_test=16", "device=cpu",
        "tokenizer.train.lr_schedule=cosine", "tokenizer.vf.adaptive_every=3"]


@pytest.fixture()
def tiny_config(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "cache"))
    return apply_overrides(get_preset("smoke"), TINY)


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_writes_run_dir_and_returns_model_and_history(tiny_config, tmp_path):
    model, history = train_tokenizer(tiny_config, tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.yaml").exists() and (run / "tokenizer.pt").exists()
    assert [s for s, _ in list_checkpoints(run)] == [4, 8]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "img_per_s" in r]
    assert steps == [2, 4, 6, 8]
    assert any(r.get("g", 0) != 0 for r in records if r["step"] > 2)  # the GAN term switched on
    assert {"psnr", "ssim", "rfid"} <= set(history["eval"][-1])
    assert history["train"][-1]["step"] == 8
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model.decode(model.encode(x).mode()).shape == x.shape


def test_resume_continues_exactly(tiny_config, tmp_path):
    straight, _ = train_tokenizer(tiny_config, tmp_path / "a")
    train_tokenizer(tiny_config, tmp_path / "b")
    # simulate an interruption after step 4: drop what the run wrote later, then resume
    (tmp_path / "b" / "checkpoints" / "step_00000008.pt").unlink()
    (tmp_path / "b" / "tokenizer.pt").unlink()
    resumed, history = train_tokenizer(tiny_config, tmp_path / "b", resume=True)
    for k, v in _params(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    a = load_checkpoint(latest_checkpoint(tmp_path / "a"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "b"))
    for k, v in a["loss"].items():
        assert torch.equal(v, b["loss"][k]), k
    steps = [json.loads(l)["step"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(4) == 1 and steps.count(6) == 1  # the repeated part is not logged twice


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    from vavae_lab.tokenizer.losses import TokenizerLoss

    original = TokenizerLoss.generator_loss

    def poisoned(self, inputs, recon, posterior, step, **kw):
        loss, logs = original(self, inputs, recon, posterior, step, **kw)
        return (loss * float("nan") if step == 5 else loss), logs

    monkeypatch.setattr(TokenizerLoss, "generator_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 5.*step_00000004\.pt"):
        train_tokenizer(tiny_config, tmp_path / "run")
    good = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert good["step"] == 4
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def _cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_bad_override_is_one_clear_line(tmp_path):
    out = _cli("-m", "vavae_lab", "train-tokenizer", "--preset", "smoke", "--out", str(tmp_path),
               "tokenizer.model.embd_dim=8")
    assert out.returncode == 2
    assert "did you mean tokenizer.model.embed_dim" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_two_process_gloo_ddp_run(tmp_path):
    env = {"VAVAE_LAB_DATA": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = _cli("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "vavae_lab", "train-tokenizer", "--preset", "smoke", "--out", str(tmp_path / "run"),
               *TINY, env_extra=env)
    assert out.returncode == 0, out.stderr[-3000:]
    state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["step"] == 8
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "img_per_s" in r] == [2, 4, 6, 8]  # only rank 0 logs


def test_cached_tokenizer_trains_once_then_loads(tiny_config, monkeypatch, tmp_path):
    from vavae_lab import pipeline
    from vavae_lab.keys import stage_dir
    from vavae_lab.train import tokenizer

    model, history = pipeline.tokenizer(tiny_config, tmp_path)
    monkeypatch.setattr(tokenizer, "train_tokenizer", lambda *a, **k: pytest.fail("retrained a cached run"))
    again, history2 = pipeline.tokenizer(apply_overrides(tiny_config, ["tokenizer.train.progress=true"]), tmp_path)
    for k, v in model.state_dict().items():
        assert torch.equal(v.cpu(), again.state_dict()[k]), k
    assert history2["eval"][-1]["psnr"] == pytest.approx(history["eval"][-1]["psnr"])
    other = apply_overrides(tiny_config, ["tokenizer.model.embed_dim=4"])
    assert stage_dir(other, "tokenizer", tmp_path) != stage_dir(tiny_config, "tokenizer", tmp_path)


def test_load_tokenizer_from_an_empty_folder_says_how_to_train(tmp_path):
    from vavae_lab import load_tokenizer
    from vavae_lab.errors import CheckpointError

    with pytest.raises(CheckpointError, match="train-tokenizer"):
        load_tokenizer(tmp_path)


def test_cli_resume_without_preset_uses_the_runs_own_config(tiny_config, tmp_path):
    from vavae_lab import cli
    from vavae_lab.config import load_config

    run = tmp_path / "run"
    train_tokenizer(tiny_config, run)
    (run / "checkpoints" / "step_00000008.pt").unlink()
    assert cli.main(["train-tokenizer", "--out", str(run), "--resume"]) == 0
    assert latest_checkpoint(run).name == "step_00000008.pt"
    assert load_config(run / "config.yaml") == tiny_config  # not the default preset's
