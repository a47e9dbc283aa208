"""Tests for PSNR, SSIM, the toy FID feature network and FID through torch-fidelity."""
from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from vavae_lab.errors import CheckpointError, ConfigError, DataError, WeightsUnavailableError
from vavae_lab.metrics import (
    ToyFeatureConfig,
    UInt8Dataset,
    compute_fid,
    get_toy_feature_net,
    psnr,
    reconstruction_metrics,
    ssim,
    to_uint8,
    toy_feature_weights_path,
)
from vavae_lab.metrics import toy_features

# Smaller than the smoke preset so the whole file stays fast on 2 shared cores.
# 200 steps: test accuracy 0.48-0.55 over training seeds 1-4 (100 steps gave 0.23-0.35, too near the 0.2 bound)
TINY = ToyFeatureConfig(num_images=1000, num_test_images=200, steps=200, batch_size=32, width=8, feature_dim=32,
                        lr=3e-3)


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    """Point the cache at a temp folder and train the tiny toy feature network once for this module."""
    root = tmp_path_factory.mktemp("vavae_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(root))
        path = toy_feature_weights_path(TINY, progress=False)
        yield root, path


def _images(n=12, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ----------------------------------------------------------------------------- PSNR


def test_psnr_constant_offset_matches_hand_value():
    x = _images(3).clamp(-0.8, 0.8)
    out = psnr(x + 0.1, x)
    # MSE = 0.01, range 2: 10 * log10(4 / 0.01) = 26.0206 dB
    assert out.shape == (3,)
    assert torch.allclose(out, torch.full((3,), 10 * math.log10(400.0)), atol=1e-4)


def test_psnr_identical_images_is_finite_via_mse_floor():
    x = _images(2)
    out = psnr(x, x.clone())
    # MSE clamped at 1e-10: 10 * log10(4 / 1e-10) = 106.02 dB, not inf
    assert torch.isfinite(out).all()
    assert torch.allclose(out, torch.full((2,), 10 * math.log10(4e10)), atol=1e-3)


def test_psnr_is_per_image_and_rejects_mismatched_shapes():
    x = _images(2)
    y = x.clone()
    y[1] += 0.2
    out = psnr(y, x)
    assert out[0] > 100 and abs(out[1].item() - 10 * math.log10(4 / 0.04)) < 1e-3
    with pytest.raises(DataError, match="shapes differ"):
        psnr(x, x[:1])


# ----------------------------------------------------------------------------- SSIM


def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range=2.0, win=11, sigma=1.5) -> float:
    """SSIM of one C x H x W pair, computed window by window with explicit weighted sums."""
    coords = np.arange(win) - (win - 1) / 2
    g = np.exp(-coords**2 / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - win + 1):
            for j in range(x.shape[2] - win + 1):
                px, py = x[c, i:i + win, j:j + win], y[c, i:i + win, j:j + win]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
                cxy = (w * px * py).sum() - mx * my
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_direct_numpy_implementation():
    x = _images(2, size=14, seed=1).double()
    y = (x + 0.3 * _images(2, size=14, seed=2).double()).clamp(-1, 1)
    ours = ssim(y, x)
    for b in range(2):
        assert abs(ours[b].item() - _ssim_numpy(y[b].numpy(), x[b].numpy())) < 1e-10


def test_ssim_is_one_for_identical_and_drops_with_noise():
    x = _images(4, seed=3) * 0.5
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-6)
    noise = _images(4, seed=4)
    light, heavy = ssim(x + 0.05 * noise, x), ssim(x + 0.3 * noise, x)
    assert (light < 1).all() and (heavy < light).all()
    assert ssim(x, x).shape == (4,)


def test_ssim_rejects_images_smaller_than_window():
    x = _images(1, size=8)
    with pytest.raises(DataError, match="smaller than the 11-px window"):
        ssim(x, x)
    assert ssim(x, x, win_size=7).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- uint8 conversion


def test_to_uint8_maps_range_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert out[0, 0, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(DataError, match="to_uint8"):
        to_uint8(out)
    with pytest.raises(DataError, match="N x 3 x H x W"):
        UInt8Dataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


# ----------------------------------------------------------------------------- toy feature network


def test_toy_feature_net_is_cached_and_beats_chance(toy_cache, monkeypatch):
    root, path = toy_cache
    monkeypatch.setenv("VAVAE_LAB_DATA", str(root))
    assert path.parent == root / "cache" / "fid_features" and path.is_file()
    monkeypatch.setattr(toy_features, "train_toy_feature_net",
                        lambda *a, **k: pytest.fail("a cached network was retrained"))
    net = get_toy_feature_net(TINY)
    again = get_toy_feature_net(TINY)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert net.test_accuracy is not None and net.test_accuracy > 0.2  # chance is 0.1
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    feats, logits = net.features_and_logits(_images(3))
    assert feats.shape == (3, TINY.feature_dim) and logits.shape == (3, TINY.num_classes)
    other = ToyFeatureConfig(**{**TINY.__dict__, "seed": TINY.seed + 1})
    assert toy_features.toy_feature_cache_path(other) != path


def test_toy_feature_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="width"):
        ToyFeatureConfig(width=0)
    with pytest.raises(ConfigError, match="unknown ToyFeatureConfig keys"):
        ToyFeatureConfig.from_dict({"widht": 8})
    from vavae_lab.toy_recipes import ToyFeatureSection

    assert issubclass(ToyFeatureConfig, ToyFeatureSection)  # the recipe is declared once, the config section
    assert ToyFeatureConfig().cache_key() == "be57635f0978"  # the cache key of the default network, unchanged
    assert ToyFeatureConfig(version=2).cache_key() != "be57635f0978"
    with pytest.raises(ConfigError, match="version=3"):
        ToyFeatureConfig(version=3)


# ----------------------------------------------------------------------------- FID


def test_fid_self_is_zero_shift_is_positive_and_deterministic(toy_cache, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(toy_cache[0]))
    from vavae_lab.data.shapes import ShapesDataset

    real = ShapesDataset(96, seed=5, split="test").images
    other = ShapesDataset(96, seed=6, split="test").images
    shifted = (real.int() + 60).clamp(0, 255).to(torch.uint8)
    self_fid = compute_fid(real, real, toy_config=TINY)["fid"]
    other_fid = compute_fid(real, UInt8Dataset(other), toy_config=TINY)["fid"]
    shift_fid = compute_fid(real, shifted, toy_config=TINY)["fid"]
    assert abs(self_fid) < 1e-3
    assert shift_fid > 0 and shift_fid > other_fid
    assert compute_fid(real, shifted, toy_config=TINY)["fid"] == shift_fid


def test_fid_extras_and_input_errors(toy_cache, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(toy_cache[0]))
    real, fake = to_uint8(_images(40, seed=7)), to_uint8(_images(40, seed=8))
    out = compute_fid(real, fake, toy_config=TINY, isc=True, prc=True, kid=True)
    assert set(out) >= {"fid", "isc_mean", "precision", "recall", "kid_mean"}
    assert all(isinstance(v, float) for v in out.values())
    assert 1.0 <= out["isc_mean"] <= TINY.num_classes and 0 <= out["precision"] <= 1
    with pytest.raises(DataError, match="to_uint8"):
        compute_fid(_images(4), real, toy_config=TINY)
    with pytest.raises(ConfigError, match="extractor"):
        compute_fid(real, fake, extractor="clip")


def test_inception_offline_without_weights_raises_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", lambda *a: pytest.fail("network access attempted"))
    x = to_uint8(_images(4))
    with pytest.raises(WeightsUnavailableError, match="weights-inception-2015-12-05-6726825d.pth"):
        compute_fid(x, x, extractor="inception")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        compute_fid(x, x, extractor="inception", weights_path=tmp_path / "missing.pth")


def test_inception_path_with_local_random_weights(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    # Build torch-fidelity's own Inception architecture with random weights (no download) and save it.
    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.manual_seed(0)
    model = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "inception_random.pth"
    torch.save(model.state_dict(), weights)
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    real = to_uint8(_images(6, seed=9))
    fake = to_uint8(_images(6, seed=10))
    start = time.perf_counter()
    out = compute_fid(real, fake, extractor="inception", weights_path=weights)
    print(f"inception FID on 6+6 32px images: {time.perf_counter() - start:.1f} s")
    assert math.isfinite(out["fid"]) and out["fid"] > 0


def test_inception_weights_of_another_architecture_raise_checkpoint_error(tmp_path):
    weights = tmp_path / "not_inception.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    x = to_uint8(_images(2))
    with pytest.raises(CheckpointError, match="does not hold inception-v3-compat weights"):
        compute_fid(x, x, extractor="inception", weights_path=weights)


def test_real_cache_name_reuses_real_features(toy_cache, monkeypatch):
    root = toy_cache[0]
    monkeypatch.setenv("VAVAE_LAB_DATA", str(root))
    real, fake = to_uint8(_images(16, seed=12)), to_uint8(_images(16, seed=13))
    first = compute_fid(real, fake, toy_config=TINY, real_cache_name="unit-real")
    cached = sorted(p.name for p in (root / "cache" / "fidelity").iterdir())
    assert cached and all(name.startswith("unit-real-") for name in cached)
    # A second call with different "real" images under the same name must read the cache, not the images.
    assert compute_fid(fake, fake, toy_config=TINY, real_cache_name="unit-real") == first
    assert compute_fid(real, fake, toy_config=TINY) == first


# ----------------------------------------------------------------------------- reconstruction_metrics


class _Posterior:
    def __init__(self, z):
        self.z = z

    def mode(self):
        return self.z


class _OffsetAutoencoder(nn.Module):
    """A stand-in tokenizer whose reconstruction is the input plus a constant."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = offset

    def encode(self, x):
        return _Posterior(x * 2)

    def decode(self, z):
        return z / 2 + self.offset


def test_reconstruction_metrics_identity_and_offset(toy_cache, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(toy_cache[0]))
    images = _images(20, seed=11) * 0.8
    model = _OffsetAutoencoder(0.0).train()
    exact = reconstruction_metrics(model, images, batch_size=8, toy_config=TINY,
                                   lpips=lambda a, b: (a - b).abs().mean(dim=(1, 2, 3), keepdim=True))
    assert model.training  # mode restored
    assert exact["n"] == 20 and exact["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert exact["psnr"] > 100 and abs(exact["rfid"]) < 1e-3 and exact["lpips"] == pytest.approx(0.0, abs=1e-7)
    shifted = reconstruction_metrics(_OffsetAutoencoder(0.1), images, batch_size=8, fid_extractor=None)
    assert shifted["psnr"] == pytest.approx(10 * math.log10(400.0), abs=1e-3)
    assert set(shifted) == {"psnr", "ssim", "n"}
