"""Every user mistake of issue 7 gives one clear `error:` line and exit status 2 at the CLI, never a traceback."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vavae_lab.checkpoint import atomic_save, checkpoint_path
from vavae_lab.cli import main
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.errors import CheckpointError
from vavae_lab.latents import STATS_FILE, LatentDataset, extract_latents
from vavae_lab.latents.stats import save_stats
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
NO_VF = ["tokenizer.vf.enabled=false", "tokenizer.train.steps=2", "tokenizer.train.batch_size=4",
         "tokenizer.train.eval_images=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A random tiny tokenizer run, its latent cache and a 4-step DiT run."""
    root = tmp_path_factory.mktemp("bad_input")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(root / "data"))
        config = apply_overrides(get_preset("smoke"), TINY)
        torch.manual_seed(0)
        atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                    root / "tok" / "tokenizer.pt")
        extract_latents(config, root / "tok", root / "lat", progress=False)
        train_dit(config, root / "lat", root / "dit")
    return root


def _images(folder: Path, classes=("a", "b"), per_class=4, size=40) -> Path:
    """root/<class>/<i>.png with random colours."""
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def _fails(capsys, *argv) -> str:
    """Run the CLI, expect exit 2 and exactly one `error:` line without a traceback; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _tokenizer_cmd(tmp_path, *overrides):
    return ("train-tokenizer", "--preset", "smoke", "--out", tmp_path / "run", *TINY, *NO_VF, *overrides)


def _extract_cmd(runs, tmp_path, *overrides):
    return ("extract-latents", "--preset", "smoke", "--tokenizer", runs / "tok", "--out", tmp_path / "lat", *TINY,
            *overrides)


# ----------------------------------------------------------------------------- config


def test_unknown_config_key_suggests_the_closest(capsys):
    line = _fails(capsys, "show-config", "--preset", "smoke", "tokenizer.model.embd_dim=8")
    assert "unknown config key 'tokenizer.model.embd_dim'" in line and "did you mean tokenizer.model.embed_dim" in line


def test_bad_values_name_the_key_and_what_is_expected(capsys, tmp_path):
    assert "tokenizer.train.steps expects an integer" in _fails(
        capsys, "show-config", "--preset", "smoke", "tokenizer.train.steps=ten")
    assert "key.sub=value" in _fails(capsys, "show-config", "--preset", "smoke", "steps")
    assert "did you mean smoke" in _fails(capsys, "show-config", "--preset", "smok")
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("tokenizer:\n  vf:\n    marign: 0.5\n")
    assert "tokenizer.vf.marign" in _fails(capsys, "show-config", "--config", yaml_file)


def test_out_of_range_training_value_fails_before_training(capsys, tmp_path):
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, "tokenizer.train.ckpt_every=0"))
    assert "tokenizer.train.ckpt_every=0" in line and "> 0" in line
    assert not (tmp_path / "run").exists()
    assert "one of adam, adamw" in _fails(capsys, *_tokenizer_cmd(tmp_path, "tokenizer.train.optimizer=sgd"))


# ----------------------------------------------------------------------------- dataset folders


def test_missing_empty_and_wrong_dataset_folders(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_images" / "cats").mkdir(parents=True)
    (tmp_path / "no_images" / "cats" / "readme.txt").write_text("hi")
    (tmp_path / "file.txt").write_text("not a folder")
    cases = {"nowhere": "does not exist", "empty": "has no class sub-folders", "no_images": "holds no images",
             "file.txt": "is a file, not a directory"}
    for name, words in cases.items():
        line = _fails(capsys, *_tokenizer_cmd(tmp_path, "data.source=imagefolder", f"data.root={tmp_path / name}"))
        assert words in line and "root/<class_name>/<image files>" in line, line
    assert "needs data.root" in _fails(capsys, *_tokenizer_cmd(tmp_path, "data.source=imagefolder"))


def test_unreadable_dataset_folder(capsys, tmp_path, monkeypatch):
    root = _images(tmp_path / "images")
    real_iterdir = Path.iterdir

    def refuse(self):
        if self == root:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse)  # root ignores chmod, so refuse the listing instead
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, "data.source=imagefolder", f"data.root={root}"))
    assert "cannot be read" in line and "Permission denied" in line and "permissions" in line


# ----------------------------------------------------------------------------- corrupt and small images


def test_corrupt_files_are_skipped_and_counted_or_named_in_strict_mode(runs, capsys, tmp_path):
    root = _images(tmp_path / "images")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (root / "b" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning) as warned:  # the CLI shows these on stderr
        assert main([str(a) for a in _extract_cmd(runs, tmp_path, "data.source=imagefolder",
                                                  f"data.root={root}")]) == 0
    text = "\n".join(str(w.message) for w in warned)
    assert "skipped 1 non-image or unreadable files" in text and "notes.txt" in text
    assert "skipping" in text and "broken.png" in text and "Traceback" not in capsys.readouterr().err
    assert len(LatentDataset(tmp_path / "lat", flip=False)) == 9  # broken.png is replaced by the next image

    line = _fails(capsys, *_extract_cmd(runs, tmp_path, "data.source=imagefolder", f"data.root={root}",
                                        "data.strict=true"))
    assert "notes.txt" in line and "is not an image" in line
    (root / "b" / "notes.txt").unlink()
    for workers in (0, 1):  # an error inside a DataLoader worker is unwrapped to the same single line
        line = _fails(capsys, *_extract_cmd(runs, tmp_path / f"w{workers}", "data.source=imagefolder",
                                            f"data.root={root}", "data.strict=true", f"data.num_workers={workers}"))
        assert "broken.png cannot be decoded as an image" in line and "strict" in line, line


def test_images_smaller_than_the_resolution(runs, capsys, tmp_path):
    root = _images(tmp_path / "images")
    _images(tmp_path / "images", classes=("b",), per_class=1, size=16)  # overwrites b/0.png with a 16 px image
    line = _fails(capsys, *_extract_cmd(runs, tmp_path, "data.source=imagefolder", f"data.root={root}",
                                        "data.strict=true"))
    assert "0.png is 16 x 16 pixels, smaller than the resolution 32" in line and "data.resolution" in line
    with pytest.warns(UserWarning, match="smaller than the resolution 32; it is upscaled"):
        assert main([str(a) for a in _extract_cmd(runs, tmp_path / "loose", "data.source=imagefolder",
                                                  f"data.root={root}")]) == 0


# ----------------------------------------------------------------------------- latent caches


def _dit_cmd(latents, tmp_path, *extra):
    return ("train-dit", "--preset", "smoke", "--latents", latents, "--out", tmp_path / "dit", *TINY, *extra)


def test_latent_cache_without_stats_or_with_stats_of_another_tokenizer(runs, capsys, tmp_path):
    work = tmp_path / "lat"
    shutil.copytree(runs / "lat", work)
    (work / STATS_FILE).unlink()
    line = _fails(capsys, *_dit_cmd(work, tmp_path))
    assert "statistics" in line and "missing" in line and "extract-latents" in line
    ds = LatentDataset(runs / "lat")
    save_stats(work / STATS_FILE, ds.mean + ds.std, 3 * ds.std, 96)  # another tokenizer's scale
    line = _fails(capsys, *_dit_cmd(work, tmp_path))
    assert "do not match" in line and "another tokenizer" in line and "fresh --out" in line
    save_stats(work / STATS_FILE, torch.zeros(1, 8, 1, 1), torch.ones(1, 8, 1, 1), 96)
    assert "belongs to another" in _fails(capsys, *_dit_cmd(work, tmp_path))
    assert "does not exist" in _fails(capsys, *_dit_cmd(tmp_path / "nowhere", tmp_path))


# ----------------------------------------------------------------------------- checkpoints


def test_resume_with_another_architecture(runs, capsys, tmp_path):
    shutil.copytree(runs / "dit", tmp_path / "dit")
    line = _fails(capsys, *_dit_cmd(runs / "lat", tmp_path, "dit.model.size=toy-S/1", "--resume"))
    assert "does not match this config's DiT" in line and "config.yaml" in line

    other = apply_overrides(get_preset("smoke"), TINY + ["tokenizer.model.embed_dim=8", "tokenizer.model.z_channels=8"])
    atomic_save({"step": 1, "model": build_autoencoder(other).state_dict()}, checkpoint_path(tmp_path / "run", 1))
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, "--resume"))
    assert "does not match this config's model" in line and "new --out folder" in line


def test_load_tokenizer_and_load_dit_of_the_wrong_kind_or_size(runs, capsys, tmp_path):
    small = apply_overrides(get_preset("smoke"), TINY)
    big = apply_overrides(small, ["tokenizer.model.embed_dim=8", "tokenizer.model.z_channels=8"])
    atomic_save({"model": build_autoencoder(small).state_dict(), "config": to_dict(big)},
                tmp_path / "tok" / "tokenizer.pt")
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_tokenizer(tmp_path / "tok")
    line = _fails(capsys, "extract-latents", "--preset", "smoke", "--tokenizer", tmp_path / "tok",
                  "--out", tmp_path / "lat", *TINY)
    assert "does not match the architecture" in line

    shutil.copy(runs / "dit" / "dit.pt", tmp_path / "tok" / "tokenizer.pt")
    with pytest.raises(CheckpointError, match="is a DiT file"):
        load_tokenizer(tmp_path / "tok")
    (tmp_path / "dit").mkdir()
    shutil.copy(runs / "tok" / "tokenizer.pt", tmp_path / "dit" / "dit.pt")
    with pytest.raises(CheckpointError, match="not a vavae_lab DiT file"):
        load_dit(tmp_path / "dit")
    line = _fails(capsys, "sample", "--preset", "smoke", "--dit", tmp_path / "dit", "--tokenizer", runs / "tok",
                  "--out", tmp_path / "samples", *TINY)
    assert "not a vavae_lab DiT file" in line

    state = torch.load(runs / "dit" / "dit.pt", weights_only=True)
    state["config"]["dit"]["model"]["size"] = "toy-S/1"
    atomic_save(state, tmp_path / "dit" / "dit.pt")
    with pytest.raises(CheckpointError, match="does not match the DiT in its own config"):
        load_dit(tmp_path / "dit")
    assert "nothing does not exist" in _fails(capsys, "extract-latents", "--preset", "smoke", "--tokenizer",
                                              tmp_path / "nothing", "--out", tmp_path / "lat", *TINY)
    (tmp_path / "empty").mkdir()
    said = _fails(capsys, "extract-latents", "--preset", "smoke", "--tokenizer", tmp_path / "empty", "--out",
                  tmp_path / "lat", *TINY)
    assert "holds no tokenizer.pt" in said and "--preset PRESET" in said
    (tmp_path / "empty" / "tokenizer.pt").write_text("x")
    assert "is a file; pass the run folder" in _fails(capsys, "extract-latents", "--preset", "smoke", "--tokenizer",
                                                      tmp_path / "empty" / "tokenizer.pt", "--out", tmp_path / "lat",
                                                      *TINY)


def test_old_layout_dit_run_without_its_latent_record(runs, capsys, tmp_path):
    shutil.copytree(runs / "dit", tmp_path / "dit")
    state = torch.load(tmp_path / "dit" / "dit.pt", weights_only=True)
    for key in ("latent_mean", "latent_std", "tokenizer_sha256", "tokenizer_dir"):
        state.pop(key)  # a dit.pt from before it held its latent stats
    atomic_save(state, tmp_path / "dit" / "dit.pt")
    line = _fails(capsys, "sample", "--preset", "smoke", "--dit", tmp_path / "dit", "--tokenizer", runs / "tok",
                  "--out", tmp_path / "samples", *TINY)
    assert "predates DiT files that hold their latent statistics" in line and "train-dit" in line
    assert not (tmp_path / "samples").exists()


# ----------------------------------------------------------------------------- offline weights


def test_weights_requested_offline_without_a_local_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    dinov2 = ("tokenizer.vf.enabled=true", "tokenizer.vf.foundation=dinov2_vitl14")
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, *dinov2))
    assert "offline" in line and "tokenizer.vf.pretrained_path=" in line and "vf.foundation=toy" in line
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, *dinov2,
                                          f"tokenizer.vf.pretrained_path={tmp_path / 'nowhere.safetensors'}"))
    assert "nowhere.safetensors" in line
    line = _fails(capsys, *_tokenizer_cmd(tmp_path, "tokenizer.loss.perceptual_weight=1"))
    assert "VGG16" in line and "tokenizer.loss.lpips_path=" in line and "tokenizer.loss.perceptual_weight=0" in line


# ----------------------------------------------------------------------------- sampling settings


@pytest.mark.parametrize("override, words", [
    ("sample.cfg_scale=-1", "sample.cfg_scale=-1.0 is out of range: it must be >= 1"),
    ("sample.cfg_scale=0.5", "sample.cfg_scale=0.5 is out of range: it must be >= 1"),
    ("sample.steps=-5", "sample.steps=-5 is out of range: it must be > 0"),
    ("sample.sampler=rk4", "sample.sampler='rk4' is out of range: it must be one of euler, heun, dopri5, ddpm"),
    ("sample.cfg_interval_start=1.5", "sample.cfg_interval_start=1.5 is out of range: it must be in [0, 1]"),
    ("sample.timestep_shift=0", "sample.timestep_shift=0.0 is out of range: it must be > 0"),
])
def test_sampler_settings_out_of_range(override, words, capsys):
    assert words in _fails(capsys, "show-config", "--preset", "smoke", override)


@pytest.mark.parametrize("override, words", [
    ("tokenizer.vf.projection=revers", "tokenizer.vf.projection='revers' is out of range: it must be one of reverse"),
    ("tokenizer.vf.m1=-0.5", "tokenizer.vf.m1=-0.5 is out of range: it must be >= 0"),
    ("tokenizer.model.embed_dim=0", "tokenizer.model.embed_dim=0 is out of range: it must be > 0"),
    ("tokenizer.loss.disc_loss=hing", "tokenizer.loss.disc_loss='hing' is out of range: it must be one of hinge"),
    ("dit.model.mlp_ratio=0", "dit.model.mlp_ratio=0.0 is out of range: it must be > 0"),
])
def test_model_and_loss_settings_out_of_range(override, words, capsys):
    assert words in _fails(capsys, "show-config", "--preset", "smoke", override)


def test_a_vf_loss_with_no_term_is_refused_by_its_overrides(capsys):
    line = _fails(capsys, "show-config", "--preset", "smoke", "tokenizer.vf.use_mcos=false",
                  "tokenizer.vf.use_mdms=false")
    assert "tokenizer.vf.use_mcos=false and tokenizer.vf.use_mdms=false" in line and "vf.enabled=false" in line
    assert main(["show-config", "--preset", "smoke", "tokenizer.vf.enabled=false", "tokenizer.vf.use_mcos=false",
                 "tokenizer.vf.use_mdms=false"]) == 0


def test_sample_command_checks_cfg_and_sampler_before_loading(runs, capsys, tmp_path):
    common = ("sample", "--preset", "smoke", "--dit", runs / "dit", "--tokenizer", runs / "tok",
              "--out", tmp_path / "samples", *TINY)
    assert "--cfg -2.0" in _fails(capsys, *common, "--cfg", "-2")
    assert "--cfg 0.5: the guidance scale must be >= 1" in _fails(capsys, *common, "--cfg", "0.5")
    assert "sample.steps=0" in _fails(capsys, *common, "sample.steps=0")
    assert "dit.transport.path=ddpm" in _fails(capsys, *common, "sample.sampler=ddpm")
    assert not (tmp_path / "samples").exists()
