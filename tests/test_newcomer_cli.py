"""Issue 14's first hour at the CLI: no silent wrong result, one clear line, nothing lost, retries never blocked."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vavae_lab.checkpoint import atomic_save, latest_checkpoint
from vavae_lab.cli import build_parser, main
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import CheckpointError, ConfigError
from vavae_lab.generate import MANIFEST_NAME, generate_images
from vavae_lab.latents import extract_latents
from vavae_lab.metrics.samples_io import load_samples, sample_files
from vavae_lab.presets import get_preset
from vavae_lab.runs import load_tokenizer
from vavae_lab.build import build_autoencoder
from vavae_lab.runs import load_dit
from vavae_lab.train.dit import train_dit

TINY = ["data.num_train=96", "data.num_test=16", "device=cpu", "latents.shard_size=64", "latents.stats_count=96",
        "latents.batch_size=32", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4",
        "tokenizer.train.progress=false", "dit.train.steps=4", "dit.train.ckpt_every=2", "dit.train.log_every=2",
        "dit.train.batch_size=16", "dit.train.progress=false", "sample.num_samples=4", "metrics.toy.feature_dim=2", "sample.batch_size=4",
        "sample.steps=2"]
WIDE = ["tokenizer.model.embed_dim=8", "tokenizer.model.z_channels=8"]


def _tokenizer(folder, overrides=(), seed=0):
    """A random tiny tokenizer run folder (tokenizer.pt and config.yaml-free, as load_tokenizer needs)."""
    config = apply_overrides(get_preset("smoke"), [*TINY, *overrides])
    torch.manual_seed(seed)
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)}, folder / "tokenizer.pt")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tokenizers of one architecture (tok, other), one with 8 latent channels (wide), a cache and a DiT on tok."""
    root = tmp_path_factory.mktemp("newcomer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(root / "data"))
        config = apply_overrides(get_preset("smoke"), TINY)
        _tokenizer(root / "tok")
        _tokenizer(root / "other", seed=1)
        _tokenizer(root / "wide", WIDE)
        extract_latents(config, root / "tok", root / "lat", progress=False)
        train_dit(config, root / "lat", root / "dit")
    return root


def _fails(capsys, *argv) -> str:
    """Run the CLI, expect exit 2 and a stderr of one `error:` line (besides progress bars); return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _sample(runs, out, *extra, tokenizer="tok", dit=None):
    return ("sample", "--dit", dit or runs / "dit", "--tokenizer", runs / tokenizer, "--out", out, *extra)


# ----------------------------------------------------------------------------- item 1: the tokenizer must match


def test_sample_refuses_another_tokenizer_of_the_same_architecture(runs, capsys, tmp_path):
    line = _fails(capsys, *_sample(runs, tmp_path / "s", tokenizer="other"))
    assert str(runs / "other") in line and str(runs / "dit") in line and str(runs / "tok") in line
    assert "sha256" in line and "--force" in line
    assert not (tmp_path / "s").exists()  # refused before anything is written
    assert main([str(a) for a in _sample(runs, tmp_path / "s", "--force", tokenizer="other")]) == 0
    assert len(sample_files(tmp_path / "s")) == 4


def test_generate_images_checks_the_tokenizer_in_python_too(runs):
    dit, config = load_dit(runs / "dit")
    with pytest.raises(CheckpointError, match="force=True"):
        generate_images(load_tokenizer(runs / "other"), dit, None, config, n=2, progress=False)
    images, _ = generate_images(load_tokenizer(runs / "other"), dit, None, config, n=2, progress=False, force=True)
    assert images.shape == (2, 3, 32, 32)


def test_another_latent_size_fails_before_writing_and_the_retry_in_the_same_out_works(runs, capsys, tmp_path):
    out = tmp_path / "s"
    line = _fails(capsys, *_sample(runs, out, tokenizer="wide"))
    assert "8-channel" in line and "4-channel" in line and "de-normalis" not in line
    assert not out.exists()
    out.mkdir()  # a manifest left by a run that failed before its first PNG does not block the retry
    (out / MANIFEST_NAME).write_text(json.dumps({"tokenizer": str(runs / "wide"), "seed": 0}))
    assert main([str(a) for a in _sample(runs, out)]) == 0
    assert json.loads((out / MANIFEST_NAME).read_text())["tokenizer"] == str((runs / "tok").resolve())


# ----------------------------------------------------------------------------- item 2: a self-contained dit.pt


def test_a_dit_folder_copied_alone_samples_like_the_original(runs, capsys, tmp_path):
    config = apply_overrides(get_preset("smoke"), TINY)
    shutil.copytree(runs / "lat", tmp_path / "lat")
    train_dit(config, tmp_path / "lat", tmp_path / "dit")
    assert not (tmp_path / "dit" / "latents.txt").exists()
    assert main([str(a) for a in _sample(runs, tmp_path / "before", dit=tmp_path / "dit")]) == 0
    moved = tmp_path / "elsewhere" / "dit"
    shutil.copytree(tmp_path / "dit", moved)
    shutil.rmtree(tmp_path / "lat")
    shutil.rmtree(tmp_path / "dit")
    assert main([str(a) for a in _sample(runs, tmp_path / "after", dit=moved)]) == 0  # no --preset: its config.yaml
    assert torch.equal(load_samples(tmp_path / "before")[0], load_samples(tmp_path / "after")[0])
    state = torch.load(moved / "dit.pt", weights_only=True)
    assert state["latent_shape"] == [4, 8, 8] and state["latent_mean"].shape == (1, 4, 1, 1)
    assert len(state["tokenizer_sha256"]) == 64


# ----------------------------------------------------------------------------- item 3: presets and --resume


def test_a_command_without_preset_or_config_names_the_choices(capsys, tmp_path):
    for argv in (("show-config",), ("train-tokenizer", "--out", tmp_path / "run"),
                 ("evaluate", "--samples", tmp_path, "--out", tmp_path / "m.json")):
        line = _fails(capsys, *argv)
        assert "needs --preset (" in line and "smoke" in line and "lab" in line and "no default" in line
    assert not (tmp_path / "run").exists()
    help_text = build_parser()._subparsers._group_actions[0].choices["train-tokenizer"].format_help()
    assert "no default" in " ".join(help_text.split())


def test_resume_without_a_checkpoint_refuses(runs, capsys, tmp_path):
    line = _fails(capsys, "train-tokenizer", "--preset", "smoke", "--out", tmp_path / "typo", "--resume")
    assert "--resume" in line and "no checkpoint" in line and "drop --resume" in line
    assert not (tmp_path / "typo").exists()
    line = _fails(capsys, "train-dit", "--preset", "smoke", "--latents", runs / "lat", "--out", tmp_path / "typo",
                  "--resume", *TINY)
    assert "no checkpoint" in line


def test_resume_on_a_finished_run_changes_nothing(runs, capsys, tmp_path):
    run = tmp_path / "dit"
    shutil.copytree(runs / "dit", run)
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train-dit", "--latents", str(runs / "lat"), "--out", str(run), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------- item 4: smoke says it is smoke


def test_smoke_reports_tables_and_summary_say_plumbing_only(capsys, tmp_path, monkeypatch):
    import vavae_lab.study as study
    from vavae_lab.study import show_table, write_report
    from vavae_lab.study.tables import Rows

    row = {"tokenizer": "f4d16", "name": "d16", "d": 16, "vf": False, "psnr": 25.0, "ssim": 0.8, "rfid": 30.0,
           "gfid": 0.5, "gfid_cfg": 0.4}
    results = {"preset": "smoke", "dilemma": [row], "table2": [row], "table5": [row], "table4": [row],
               "table6": [], "proxies": [], "spearman": {"n": 0}, "table1": [], "sampling": {}}
    monkeypatch.setattr(study, "reproduce", lambda preset, out, *a, **k: write_report(dict(results), out))
    assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    assert "plumbing only" in capsys.readouterr().out
    assert "plumbing only" in (tmp_path / "report.md").read_text().splitlines()[2]
    assert "plumbing only" in json.loads((tmp_path / "report.json").read_text())["note"]
    def text(table):
        return getattr(table, "data", table)  # IPython's Markdown, or plain text without IPython

    assert "plumbing only" in text(show_table(Rows([row], "smoke"), [("gfid", "gFID", ".1f")]))
    assert "plumbing" not in text(show_table(Rows([row], "lab"), [("gfid", "gFID", ".1f")]))


# ----------------------------------------------------------------------------- item 5: the smaller ones


def test_ctrl_c_in_sample_says_how_sample_resumes(capsys, monkeypatch, tmp_path):
    from tqdm import tqdm

    import vavae_lab.generate as generate

    def interrupted(*args, **kwargs):
        bar = tqdm(total=4, desc="sampling")
        bar.update(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "sample_to_folder", interrupted)
    assert main(["sample", "--preset", "smoke", "--dit", "d", "--tokenizer", "t", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "interrupted" in line)
    assert line.startswith("interrupted") and "same sample command again" in line and "--resume" not in line


def test_a_text_file_as_checkpoint_is_one_line(runs, capsys, tmp_path):
    (tmp_path / "dit").mkdir()
    (tmp_path / "dit" / "dit.pt").write_text("these are my notes, not weights\n" * 3)
    line = _fails(capsys, *_sample(runs, tmp_path / "s", "--preset", "smoke", dit=tmp_path / "dit"))
    assert "cannot be read as a PyTorch checkpoint" in line


def test_errors_name_what_the_user_typed(runs, capsys, tmp_path):
    assert "--n 0" in _fails(capsys, *_sample(runs, tmp_path / "s", "--n", "0"))
    root = tmp_path / "images" / "a"
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(root / "0.png")
    (root / "notes.txt").write_text("not an image")
    line = _fails(capsys, "extract-latents", "--preset", "smoke", "--tokenizer", runs / "tok", "--out",
                  tmp_path / "lat", *TINY, "data.source=imagefolder", f"data.root={root.parent}", "data.strict=true")
    assert "data.strict=false" in line
    (tmp_path / "empty").mkdir()
    line = _fails(capsys, "evaluate", "--preset", "smoke", "--samples", tmp_path / "empty", "--out", tmp_path / "m.json")
    assert "python -m vavae_lab sample" in line


def test_launch_with_zero_gpus_says_one_runs_on_the_cpu(tmp_path):
    from vavae_lab.launch import launch

    with pytest.raises(ConfigError, match="gpus=1 on a machine without a GPU runs one process on the CPU"):
        launch("train-tokenizer", "smoke", gpus=0, run_dir=tmp_path, dry_run=True)


def test_dopri5_stops_at_max_nfe_and_the_retry_with_euler_works(runs, capsys, tmp_path):
    out = tmp_path / "s"
    line = _fails(capsys, *_sample(runs, out, "sample.sampler=dopri5", "sample.max_nfe=3", "sample.rtol=1e-9",
                                   "sample.atol=1e-9"))
    assert "sample.max_nfe=3" in line and "sample.sampler=euler" in line
    assert main([str(a) for a in _sample(runs, out)]) == 0
    assert len(sample_files(out)) == 4 and latest_checkpoint(runs / "dit") is not None


def test_reproduce_names_a_mistyped_table_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    assert main(["reproduce", "--preset", "smoke", "--tables", "tabel2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--tables tabel2: no such table" in err and "table2" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "data" / "cache").exists()
