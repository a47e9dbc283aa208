"""vavae_lab.launch from Python as a notebook cell would: a 2-process gloo run stopped, re-attached and resumed."""
import io
import json
import shlex
import time

import pytest

from vavae_lab import attach, launch
from vavae_lab.checkpoint import list_checkpoints
from vavae_lab.errors import ConfigError

STEPS = 16
QUICK = ["device=cpu", "data.num_train=256", "data.num_test=64", f"tokenizer.train.steps={STEPS}",
         "tokenizer.train.batch_size=32", "tokenizer.train.ckpt_every=4", "tokenizer.train.log_every=2",
         "tokenizer.train.keep_checkpoints=0", "tokenizer.train.eval_images=32"]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_process_run_stops_reattaches_and_resumes(tmp_path):
    run = tmp_path / "tok"
    handle = launch("train-tokenizer", "smoke", gpus=2, overrides=QUICK, run_dir=run)
    record = json.loads((run / "launch.json").read_text())
    assert record["pgid"] == handle.pgid and record["stage"] == "train-tokenizer"
    assert "--nproc_per_node 2" in record["shell"] and record["overrides"] == QUICK
    assert handle.status().state == "running"

    _wait_for(lambda: list_checkpoints(run) or not handle.is_running(), 90, "the first checkpoint")
    stopped = handle.stop(timeout=20)
    assert stopped.state == "stopped", handle.tail(30)
    done_before = [step for step, _ in list_checkpoints(run)]
    assert done_before and max(done_before) < STEPS, "the run should have been stopped mid-way"
    assert not (run / "tokenizer.pt").exists()

    again = attach(run)  # as a reopened notebook would
    assert again.status().state == "stopped" and again.spec.overrides == QUICK
    resumed = again.resume()
    assert "--resume" in resumed.command
    final = resumed.wait(timeout=120)
    assert final.state == "finished" and final.exit_code == 0, resumed.tail(40)
    assert (run / "tokenizer.pt").exists()
    assert [s for s, _ in list_checkpoints(run)][-1] == STEPS
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = steps[:-1]  # the last record is the final evaluation
    assert train_steps == list(range(2, STEPS + 1, 2)), steps  # no step lost or repeated by the resume
    assert "resuming from" in resumed.tail(200)
    buf = io.StringIO()
    assert attach(run).follow(poll=0.1, file=buf).state == "finished"  # replays the log, then returns
    assert "final: psnr=" in buf.getvalue() and "train-tokenizer: finished (exit code 0)" in buf.getvalue()
    # only the newest launch is replayed: the stopped launch's torchrun SIGTERM noise stays in the log file
    assert "resuming from" in buf.getvalue() and "got signal" not in buf.getvalue()
    assert "got signal" in (run / "launch.log").read_text() or "SIGTERM" in (run / "launch.log").read_text()


def test_failed_run_reports_its_exit_code(tmp_path):
    handle = launch("train-tokenizer", "smoke", gpus=1, overrides=["tokenizer.train.stepz=3"], run_dir=tmp_path)
    status = handle.wait(timeout=60)
    assert status.state == "failed" and status.exit_code not in (None, 0)
    assert "unknown config key" in handle.tail(50)


def test_multi_node_command_line():
    handle = launch("train-dit", "smoke", gpus=8, nodes=4, node_rank=2, master_addr="node0", master_port=1234,
                    run_dir="/scratch/dit-xl", latents="/scratch/latents", overrides=["dit.train.steps=10"],
                    python="python", dry_run=True)
    assert handle.status().state == "not started"
    assert shlex.split(handle.shell_command()) == [
        "python", "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "4", "--node_rank", "2",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", "node0:1234", "--rdzv_id", "dit-xl",
        "-m", "vavae_lab", "train-dit", "--preset", "smoke", "--out", "/scratch/dit-xl",
        "--latents", "/scratch/latents", "dit.train.steps=10"]
    explicit = launch("train-dit", "smoke", nodes=2, rdzv_endpoint="head:29400", run_dir="/r", latents="/l",
                      dry_run=True)
    assert "head:29400" in explicit.command
    script = handle.sbatch_script()
    assert "#SBATCH --nodes=4" in script and "#SBATCH --gpus-per-node=8" in script
    assert "--nproc_per_node 8" in script and "--rdzv_backend c10d" in script
    assert "--node_rank" not in script  # SLURM nodes get their rank from the rendezvous


def test_single_node_defaults_to_a_free_port():
    cmd = launch("train-tokenizer", "smoke", gpus=2, run_dir="/r", dry_run=True).command
    assert "--standalone" in cmd
    fixed = launch("train-tokenizer", "smoke", gpus=2, run_dir="/r", master_port=2222, dry_run=True).command
    assert fixed[fixed.index("--master_port") + 1] == "2222" and "--standalone" not in fixed


@pytest.mark.parametrize("kwargs, message", [
    (dict(stage="train-dit", preset="smoke"), "needs --latents"),
    (dict(stage="train", preset="smoke"), "unknown stage"),
    (dict(stage="train-tokenizer", preset="smok"), "neither a preset"),
    (dict(stage="train-tokenizer", preset="smoke", nodes=2, node_rank=2), "node_rank"),
])
def test_mistakes_are_reported_before_starting(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        launch(**kwargs, dry_run=True)


def test_attach_needs_a_launched_run_dir(tmp_path):
    with pytest.raises(ConfigError, match="launch.json"):
        attach(tmp_path)
