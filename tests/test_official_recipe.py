"""The pieces the ImageNet presets use to follow the official recipe: the random crop, stage chains, and cache keys
that stay the same for every run that does not use them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vavae_lab.config import apply_overrides, load_config
from vavae_lab.data import ImageFolderDataset
from vavae_lab.data.imagefolder import random_crop_arr, resize_short_side
from vavae_lab.errors import CheckpointError, ConfigError
from vavae_lab.keys import KEYED_WHEN_SET, stage_dir, stage_fields, stage_key
from vavae_lab.presets import get_preset, previous_stage
from vavae_lab.train.common import StepBatches


def _noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_short_side_resize_is_bilinear_without_antialias():
    """Halving a noise image: bilinear without antialias (OpenCV's INTER_LINEAR) averages 2 x 2 blocks exactly;
    an antialiased resize would spread over 4 x 4."""
    arr = _noise_image(80, 120)
    out = resize_short_side(arr, 40)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    blocks = arr.astype(np.float64).reshape(40, 2, 60, 2, 3).mean((1, 3))
    assert np.abs(out - blocks).max() <= 0.5
    smooth = F.interpolate(torch.from_numpy(arr).permute(2, 0, 1)[None].float(), size=(40, 60), mode="bilinear",
                           antialias=True)[0].permute(1, 2, 0).numpy()
    assert np.abs(out - smooth).max() > 5
    assert resize_short_side(arr, 80) is arr  # already the size
    assert resize_short_side(_noise_image(30, 45), 64).shape == (64, 96, 3)  # small images are enlarged
    assert resize_short_side(_noise_image(333, 500), 256).shape == (256, 384, 3)  # sides rounded


def test_random_crop_is_a_window_of_the_resized_image_at_the_seed():
    image = Image.fromarray(_noise_image(60, 90))
    resized = resize_short_side(np.asarray(image), 40)  # 40 x 60
    windows = {i: resized[:, i:i + 40] for i in range(21)}
    offsets = set()
    for seed in range(12):
        crop = random_crop_arr(image, 40, seed)
        assert crop.shape == (40, 40, 3) and np.array_equal(crop, random_crop_arr(image, 40, seed))
        offsets.add(next(i for i, w in windows.items() if np.array_equal(w, crop)))
    assert len(offsets) > 3  # the seed moves the window
    assert np.array_equal(random_crop_arr(image, 40, None), windows[10])  # no seed: the centre


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "train"
    for cls, seed in (("cat", 0), ("dog", 1)):
        (root / cls).mkdir(parents=True)
        Image.fromarray(_noise_image(48, 72, seed)).save(root / cls / "a.png")
    return root


def test_imagefolder_random_crop_keys(folder):
    centre = ImageFolderDataset(folder, 32)
    rand = ImageFolderDataset(folder, 32, crop="random")
    a, b = rand[(0, False, 5)][0], rand[(0, False, 6)][0]
    assert a.shape == (3, 32, 32) and torch.equal(a, rand[(0, False, 5)][0]) and not torch.equal(a, b)
    assert torch.equal(rand[(0, True, 5)][0], a.flip(-1))
    assert torch.equal(rand[0][0], rand[(0, False)][0])  # no seed: the centre of the short-side resize
    assert not torch.equal(rand[0][0], centre[0][0])  # which is not ADM's crop (BOX halving, bicubic)
    with pytest.raises(ConfigError, match="data.crop='middle'"):
        ImageFolderDataset(folder, 32, crop="middle")


def test_step_batches_draw_one_crop_seed_per_image_and_step():
    full = StepBatches(64, 8, seed=3, crop_seeds=True)
    keys = list(full.sampler(0, 3))
    assert all(len(k) == 3 for batch in keys for k in batch)
    assert keys == list(StepBatches(64, 8, seed=3, crop_seeds=True).sampler(0, 3))  # a pure function of the step
    assert list(full.sampler(2, 3)) == keys[2:]  # so a resumed run sees the same crops
    ranks = [StepBatches(64, 8, seed=3, rank=r, world_size=2, crop_seeds=True) for r in range(2)]
    assert [k for r in ranks for k in next(r.sampler(1, 2))] == keys[1]
    assert [k[:2] for k in keys[0]] == next(StepBatches(64, 8, seed=3).sampler(0, 1))  # same images and flips


def test_new_fields_stay_out_of_the_keys_until_set():
    """KEYED_WHEN_SET: a field added after the pack was trained is keyed only away from its earlier behaviour, so
    every smoke/lab_classic key (tests/test_study.py, tests/test_pack.py) stays valid."""
    lab = load_config("lab_classic")
    assert "crop" not in stage_fields(lab, "data")
    assert "preprocess" not in stage_fields(lab, "tokenizer")["vf"] and "init_from" not in stage_fields(lab, "tokenizer")
    assert "seed" not in stage_fields(lab, "dit")
    assert "version" not in stage_fields(lab, "metrics")["toy"]
    assert set(KEYED_WHEN_SET) == {"data", "tokenizer", "dit", "metrics"}
    base = stage_key(lab, "tokenizer")
    for override in ("data.crop=random", "tokenizer.vf.preprocess=official", "tokenizer.init_from=runs/stage1",
                     "metrics.toy.version=2"):
        assert stage_key(apply_overrides(lab, [override]), "tokenizer") != base, override
    assert stage_key(apply_overrides(lab, ["dit.seed=1"]), "dit") != stage_key(lab, "dit")


def test_latent_cache_identity_ignores_the_training_crop():
    from vavae_lab.latents.cache import _identity

    class Arch(torch.nn.Module):
        config = {"arch": 1}

    lab = load_config("lab")
    assert _identity(lab, Arch(), "sha") == _identity(apply_overrides(lab, ["data.crop=random"]), Arch(), "sha")


def test_bad_chain_and_crop_values_are_one_clear_line():
    with pytest.raises(ConfigError, match="tokenizer.init_from='imagenet256_f16d32_vf_stag1'.*preset name") as err:
        load_config("imagenet256_f16d32_vf", ["tokenizer.init_from=imagenet256_f16d32_vf_stag1"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="data.crop='centre'.*one of center, random"):
        load_config("lab", ["data.crop=centre"])
    with pytest.raises(ConfigError, match="names no preset"):
        previous_stage(load_config("lab"))


TINY = ["tokenizer.train.steps=4", "tokenizer.train.ckpt_every=4", "tokenizer.train.log_every=2",
        "tokenizer.train.batch_size=8", "tokenizer.loss.disc_start=2", "tokenizer.train.eval_images=0",
        "tokenizer.train.progress=false", "data.num_train=64", "data.num_test=16", "device=cpu"]


def test_a_stage_starts_from_the_weights_of_the_one_before(tmp_path, monkeypatch):
    """A toy two-stage chain: stage 2 starts from stage 1's autoencoder and loss weights (discriminator, VF
    projection), with fresh optimisers and its own step count, like the official weight_init."""
    from vavae_lab.checkpoint import latest_checkpoint, load_checkpoint
    from vavae_lab.train import tokenizer as train_module

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "cache"))
    first = apply_overrides(get_preset("smoke"), TINY)
    train_module.train_tokenizer(first, tmp_path / "stage1")
    stage1 = load_checkpoint(latest_checkpoint(tmp_path / "stage1"))
    second = apply_overrides(first, [f"tokenizer.init_from={tmp_path / 'stage1'}", "tokenizer.train.lr=1e-30",
                                     "tokenizer.train.steps=1", "tokenizer.train.ckpt_every=1"])
    train_module.train_tokenizer(second, tmp_path / "stage2")
    stage2 = load_checkpoint(latest_checkpoint(tmp_path / "stage2"))
    assert stage2["step"] == 1
    for part in ("model", "loss"):  # lr 1e-30: one step leaves the initial weights as they were
        for k, v in stage1[part].items():
            if k != "vf_weight_cache":  # the adaptive VF weight's (step, value) cache belongs to each run
                assert torch.allclose(stage2[part][k].float(), v.float(), atol=1e-20), (part, k)
    scratch = apply_overrides(second, ["tokenizer.init_from=null"])
    fresh, _ = train_module.train_tokenizer(scratch, tmp_path / "fresh")
    assert not torch.equal(fresh.state_dict()["encoder.conv_in.weight"], stage1["model"]["encoder.conv_in.weight"])
    # by preset name: the named preset's stage with this run's other settings, from its cache folder, which the
    # cached chain (and the CLI) pass to the training loop
    from vavae_lab import pipeline

    named = apply_overrides(first, ["tokenizer.init_from=smoke"])
    assert pipeline.init_source(named, tmp_path / "root") == stage_dir(
        apply_overrides(first, ["tokenizer.train.steps=60", "tokenizer.loss.disc_start=40"]), "tokenizer",
        tmp_path / "root")
    with pytest.raises(CheckpointError, match="train-tokenizer --preset smoke"):
        pipeline.tokenizer(named, tmp_path / "root")
