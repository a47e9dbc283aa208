"""The whole smoke pipeline from the command line: tokenizer -> latents -> DiT -> samples -> FID."""
import json
import os
import subprocess
import sys
import time

import pytest

FAST = ["data.num_train=256", "data.num_test=64", "tokenizer.train.steps=20", "tokenizer.train.eval_images=32",
        "dit.train.steps=20", "sample.num_samples=40", "sample.batch_size=40", "metrics.num_images=64",
        "metrics.toy.feature_dim=16"]


def _run(*args, env):
    out = subprocess.run([sys.executable, "-m", "vavae_lab", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, f"{args[0]} failed:\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(tmp_path):
    env = dict(os.environ, VAVAE_LAB_DATA=str(tmp_path / "cache"))
    t0 = time.perf_counter()
    _run("train-tokenizer", "--preset", "smoke", "--out", str(tmp_path / "tok"), *FAST, env=env)
    _run("extract-latents", "--preset", "smoke", "--tokenizer", str(tmp_path / "tok"),
         "--out", str(tmp_path / "lat"), *FAST, env=env)
    _run("train-dit", "--preset", "smoke", "--latents", str(tmp_path / "lat"), "--out", str(tmp_path / "dit"),
         *FAST, env=env)
    _run("sample", "--preset", "smoke", "--dit", str(tmp_path / "dit"), "--tokenizer", str(tmp_path / "tok"),
         "--out", str(tmp_path / "samples"), "--n", "40", "--cfg", "2.0", *FAST, env=env)
    assert len(list((tmp_path / "samples").glob("0*.png"))) == 40
    assert (tmp_path / "samples" / "grid.png").exists()
    _run("evaluate", "--preset", "smoke", "--samples", str(tmp_path / "samples"),
         "--out", str(tmp_path / "fid.json"), *FAST, env=env)
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["n"] == 40
    assert result["fid"] == result["fid"] and result["fid"] > 0  # finite and positive
    print(f"smoke pipeline (reduced) took {time.perf_counter() - t0:.0f} s")
