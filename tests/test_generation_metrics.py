"""Tests for sample folders and generation metrics against shapes, image-folder and ADM .npz references."""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from vavae_lab.build import sample_scoring
from vavae_lab.config import Config, apply_overrides
from vavae_lab.data.shapes import ShapesDataset
from vavae_lab.errors import ConfigError, DataError, WeightsUnavailableError
from vavae_lab.metrics import generation
from vavae_lab.metrics.generation import ReferenceFolder, evaluate_samples
from vavae_lab.metrics.samples_io import write_metrics
from vavae_lab.metrics.samples_io import grid_indices, load_samples, save_samples

# A toy FID network smaller than the smoke preset, so the file stays fast on 2 shared cores.
TINY_TOY = {"metrics.toy.width": 8, "metrics.toy.feature_dim": 32, "metrics.toy.steps": 100,
            "metrics.toy.batch_size": 32, "metrics.toy.lr": 3e-3, "metrics.toy.num_images": 1000}


def _random_uint8(n, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    """One BLAS thread: KID's numpy kernels run ~10x slower when OpenBLAS threads compete for 2 shared cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory):
    """A temp cache root with the tiny toy feature network trained once, and the config that names it."""
    root = tmp_path_factory.mktemp("vavae_gen")
    config = apply_overrides(Config(), TINY_TOY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(root))
        from vavae_lab.metrics.toy_features import toy_feature_weights_path
        from vavae_lab.build import toy_feature_config

        toy_feature_weights_path(toy_feature_config(config), progress=False)
        yield root, config


# ----------------------------------------------------------------------------- sample folders


def test_save_load_round_trip_with_labels_and_grid(tmp_path):
    images = _random_uint8(7)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    out = save_samples(images, labels, tmp_path / "s")
    names = sorted(p.name for p in out.iterdir())
    assert names[:7] == ["000000_c0.png", "000001_c1.png", "000002_c2.png", "000003_c0.png", "000004_c1.png",
                         "000005_c2.png", "000006_c1.png"]
    assert set(names[7:]) == {"grid.png", "labels.json"}
    loaded, loaded_labels = load_samples(out)
    assert loaded.dtype == torch.uint8 and torch.equal(loaded, images)
    assert torch.equal(loaded_labels, labels)
    # Labels come from the file names when labels.json is gone.
    (out / "labels.json").unlink()
    assert torch.equal(load_samples(out)[1], labels)


def test_grid_is_class_sorted_with_one_row_per_class(tmp_path):
    images = _random_uint8(7, seed=1)
    labels = [0, 1, 2, 0, 1, 2, 1]
    chosen, nrow = grid_indices(labels, 7)
    assert chosen == [0, 3, 1, 4, 6, 2, 5] and nrow == 3
    out = save_samples(images, labels, tmp_path / "g")
    grid = torch.from_numpy(np.array(Image.open(out / "grid.png"))).permute(2, 0, 1)
    # make_grid: 3 columns x 3 rows of 8 px cells with 2 px padding -> 32 x 32.
    assert grid.shape == (3, 32, 32)
    for k, index in enumerate(chosen):
        top, left = 2 + (k // 3) * 10, 2 + (k % 3) * 10
        assert torch.equal(grid[:, top:top + 8, left:left + 8], images[index])
    many, _ = grid_indices([i % 10 for i in range(1000)], 1000)
    assert len(many) == 100 and many[:10] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]


def test_unlabelled_samples_and_overwrite(tmp_path):
    out = save_samples(_random_uint8(5), None, tmp_path / "u", grid=False)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "000003.png",
                                                     "000004.png", "labels.json"]
    assert load_samples(out)[1] is None
    with pytest.raises(DataError, match="overwrite=True"):
        save_samples(_random_uint8(3), None, out)
    fresh = _random_uint8(3, seed=2)
    save_samples(fresh, [4, 4, 4], out, overwrite=True)
    images, labels = load_samples(out)
    assert torch.equal(images, fresh) and labels.tolist() == [4, 4, 4]


def test_sample_io_errors(tmp_path):
    with pytest.raises(DataError, match="to_uint8"):
        save_samples(torch.rand(2, 3, 8, 8), None, tmp_path / "f")
    with pytest.raises(DataError, match="3 labels for 2 images"):
        save_samples(_random_uint8(2), [0, 1, 2], tmp_path / "f")
    with pytest.raises(DataError, match="does not exist"):
        load_samples(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no sample PNGs"):
        load_samples(tmp_path / "empty")
    out = save_samples(_random_uint8(3), [0, 1, 2], tmp_path / "bad")
    (out / "000001_c1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="000001_c1.png"):
        load_samples(out)
    save_samples(_random_uint8(2, size=8), None, tmp_path / "mixed")
    Image.new("RGB", (6, 6)).save(tmp_path / "mixed" / "000002.png")
    with pytest.raises(DataError, match="share one size"):
        load_samples(tmp_path / "mixed")


def test_load_adm_npz_samples(tmp_path):
    images = _random_uint8(4, seed=3)
    np.savez(tmp_path / "samples.npz", images.permute(0, 2, 3, 1).numpy(), np.array([3, 1, 4, 1]))
    loaded, labels = load_samples(tmp_path / "samples.npz")
    assert torch.equal(loaded, images) and labels.tolist() == [3, 1, 4, 1]


# ----------------------------------------------------------------------------- shapes and folder references


def test_shapes_reference_real_low_noise_high(toy_env, monkeypatch):
    root, config = toy_env
    monkeypatch.setenv("VAVAE_LAB_DATA", str(root))
    real = ShapesDataset(200, seed=config.data.seed, split="test").images
    good = evaluate_samples(real, **sample_scoring(config), num_real=400)
    noise = evaluate_samples(_random_uint8(200, size=32), **sample_scoring(config), num_real=400)
    assert set(good) >= {"fid", "is", "kid", "precision", "recall", "n"}
    assert all(isinstance(good[k], float) for k in ("fid", "is", "kid", "precision", "recall"))
    assert good["n"] == 200 and good["n_real"] == 400 and good["extractor"] == "vavae-toy" and good["notes"] == []
    assert good["precision"] > 0.8 and good["recall"] > 0.8
    assert noise["fid"] > 10 * good["fid"] and noise["precision"] < 0.2
    assert noise["kid"] > good["kid"] and 1.0 <= good["is"] <= 10.0
    # The reference features are cached by config and reused.
    cached = list((root / "cache" / "generation_reference").glob("*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(generation, "_extract", _fail_on_reference(generation._extract, n_fake=200))
    assert evaluate_samples(real, **sample_scoring(config), num_real=400) == good
    # kid=False (the study's sweeps) skips only KID: every other number is the same
    fast = evaluate_samples(real, **sample_scoring(config), num_real=400, kid=False)
    assert math.isnan(fast["kid"]) and fast["notes"] == ["KID skipped (kid=False)"]
    assert {k: v for k, v in fast.items() if k not in ("kid", "kid_std", "notes")} == \
        {k: v for k, v in good.items() if k not in ("kid", "kid_std", "notes")}


def _fail_on_reference(extract, n_fake):
    """Wrap _extract so that extracting anything but the n_fake samples fails the test."""
    def wrapped(module, dataset, *args):
        if len(dataset) != n_fake:
            pytest.fail("reference features were recomputed instead of read from the cache")
        return extract(module, dataset, *args)
    return wrapped


def test_shapes_reference_small_n_and_errors(toy_env, monkeypatch):
    root, config = toy_env
    monkeypatch.setenv("VAVAE_LAB_DATA", str(root))
    dim = config.metrics.toy.feature_dim
    with pytest.raises(DataError, match=f"FID needs more samples than feature dimensions: got {dim} for {dim}-dim"):
        evaluate_samples(ShapesDataset(dim, split="test").images, **sample_scoring(config), num_real=50)
    with pytest.raises(DataError, match=f"more reference images than feature dimensions: got {dim}"):
        evaluate_samples(ShapesDataset(dim + 1, split="test").images, **sample_scoring(config), num_real=dim)
    narrow = apply_overrides(config, ["metrics.toy.feature_dim=2"])  # 3 samples are enough for 2-d features
    three = evaluate_samples(ShapesDataset(3, split="test").images, **sample_scoring(narrow), num_real=50)
    assert math.isfinite(three["fid"]) and math.isfinite(three["kid"])  # KID's subset shrinks to 3
    assert math.isnan(three["precision"]) and "at least 4 images" in three["notes"][0]
    with pytest.raises(DataError, match="at least 2"):
        evaluate_samples(ShapesDataset(1, split="test").images, **sample_scoring(config))
    with pytest.raises(ConfigError, match="config.data.resolution=32"):
        evaluate_samples(_random_uint8(4, size=16), **sample_scoring(config))
    with pytest.raises(ConfigError, match="holds only 30000"):
        evaluate_samples(_random_uint8(4, size=32), **sample_scoring(config), num_real=40000)
    with pytest.raises(DataError, match="to_uint8"):
        evaluate_samples(torch.rand(4, 3, 32, 32), **sample_scoring(config))
    with pytest.raises(DataError, match="neither 'shapes'"):
        evaluate_samples(_random_uint8(4, size=32), **sample_scoring(config, "no/such/place"))


def test_folder_reference_and_sample_folder(toy_env, monkeypatch, tmp_path):
    root, config = toy_env
    monkeypatch.setenv("VAVAE_LAB_DATA", str(root))
    shapes = ShapesDataset(40, seed=3, split="train")
    ref = tmp_path / "ref"
    for i, (image, label) in enumerate(zip(shapes.images, shapes.labels)):
        (ref / f"class{int(label)}" / "deeper").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(ref / f"class{int(label)}" / "deeper" / f"{i}.png")
    (ref / "README.txt").write_text("not an image")
    samples_dir = save_samples(shapes.images, shapes.labels, tmp_path / "samples")
    from_tensor = evaluate_samples(shapes.images, **sample_scoring(config, ref))
    from_folder = evaluate_samples(samples_dir, **sample_scoring(config, ref))
    assert from_tensor["n_real"] == 40 and abs(from_tensor["fid"]) < 1e-3
    assert from_tensor["precision"] == 1.0 and from_tensor["recall"] == 1.0
    assert from_folder["fid"] == pytest.approx(from_tensor["fid"], abs=1e-6) and from_folder["n"] == 40
    # Adding an image changes the folder's fingerprint, so cached reference features are not reused.
    Image.fromarray(_random_uint8(1, size=32, seed=9)[0].permute(1, 2, 0).numpy()).save(ref / "extra.png")
    grown = evaluate_samples(shapes.images, **sample_scoring(config, ref))
    assert grown["n_real"] == 41 and grown["fid"] > 1e-3
    (ref / "class0" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="broken.jpg"):
        evaluate_samples(shapes.images, **sample_scoring(config, ref))


def test_reference_folder_centre_crops_to_the_sample_size(tmp_path):
    wide = np.zeros((48, 64, 3), dtype=np.uint8)
    wide[:, 8:56] = 200  # the centre 48 x 48 square is bright, the side bands dark
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "a" / "wide.jpg", quality=100)
    Image.fromarray(wide).save(tmp_path / "a" / ".hidden" / "skip.png")
    folder = ReferenceFolder(tmp_path, 16)
    assert len(folder) == 1 and folder.available == 1
    image = folder[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    # Cropped, not squashed: squashing would keep the dark side bands (mean ~150); bicubic rings at the edges.
    assert (image[:, :, 2:-2].float() - 200).abs().max() < 8 and image.float().mean() > 180
    assert len(folder.select(1)) == 1


# ----------------------------------------------------------------------------- ADM .npz reference (Inception)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """torch-fidelity's Inception architecture with random weights, saved locally (no download)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    path = tmp_path_factory.mktemp("inception") / "inception_random.pth"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        model = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    torch.save(model.state_dict(), path)
    return path


def test_npz_reference_uses_mu_sigma_and_arr0(inception_weights, tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    # Inception is fully convolutional up to its adaptive pooling: a 96 px input (not 299) keeps this test fast.
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 96)
    images = _random_uint8(70, size=16, seed=4)  # more images than the 64 feature dimensions, or FID refuses
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["64"],
                                            feature_extractor_weights_path=str(inception_weights))
    with torch.no_grad():
        feats = extractor(images)[0].double().numpy()
    # 64-d statistics select Inception's 64-channel pooled layer (2048 = pool3 for ADM's files); FID stays cheap.
    mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    np.savez(tmp_path / "batch.npz", images.permute(0, 2, 3, 1).numpy(), mu=mu, sigma=sigma)
    config = apply_overrides(Config(), {"metrics.inception_path": str(inception_weights)})
    stats_only = evaluate_samples(images, **sample_scoring(config, tmp_path / "stats.npz"))
    assert stats_only["layer"] == "64" and stats_only["extractor"] == "inception-v3-compat"
    assert abs(stats_only["fid"]) < 1e-4 and math.isfinite(stats_only["is"]) and stats_only["is"] >= 1 - 1e-9
    assert all(math.isnan(stats_only[k]) for k in ("kid", "precision", "recall"))
    assert stats_only["n_real"] is None and "only mu/sigma" in stats_only["notes"][0]
    with_images = evaluate_samples(images, **sample_scoring(config, tmp_path / "batch.npz"))
    assert with_images["fid"] == pytest.approx(stats_only["fid"], abs=1e-9)
    assert with_images["n_real"] == 70 and with_images["precision"] == 1.0 and with_images["recall"] == 1.0
    assert math.isfinite(with_images["kid"]) and with_images["notes"] == []
    with pytest.raises(ConfigError, match="Inception features"):
        evaluate_samples(images, **{**sample_scoring(config, tmp_path / "stats.npz"), "extractor": "toy"})
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(DataError, match="needs 'mu' and 'sigma'"):
        evaluate_samples(images, **sample_scoring(config, tmp_path / "bad.npz"))


def test_npz_reference_offline_without_inception_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network access attempted"))
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(WeightsUnavailableError, match="weights-inception-2015-12-05-6726825d.pth"):
        evaluate_samples(_random_uint8(4, size=16), reference=tmp_path / "stats.npz")


# ----------------------------------------------------------------------------- write_metrics


def test_write_metrics_is_strict_json_with_null_for_nan(tmp_path):
    result = {"fid": 1.5, "is": 2.0, "kid": math.nan, "precision": math.nan, "recall": math.nan, "n": 6,
              "notes": ["only mu/sigma"]}
    path = write_metrics(result, tmp_path / "out" / "metrics.json")
    assert json.loads(path.read_text()) == {**result, "kid": None, "precision": None, "recall": None}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]
