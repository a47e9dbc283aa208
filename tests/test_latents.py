"""Latent cache: extraction (shards, flips, stats, meta), resume, LatentDataset indexing and its stats check."""
import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vavae_lab.config import Config, DataConfig, LatentsConfig, TokenizerConfig, VAEConfig, to_dict
from vavae_lab.data import ShapesDataset
from vavae_lab.errors import ConfigError, DataError
from vavae_lab.latents import (LatentDataset, channel_stats, denormalize, extract_latents, normalize, read_meta,
                               shard_name)
from vavae_lab.latents import cache as cache_module
from vavae_lab.latents.stats import STATS_FILE, save_stats, stats_subset
from vavae_lab.build import build_autoencoder

N, SHARD = 42, 16  # shards of 16, 16 and 10 images


def _config(**data) -> Config:
    data = {"source": "shapes", "resolution": 16, "num_train": N, "num_classes": 5, **data}
    return Config(device="cpu", data=DataConfig(**data),
                  tokenizer=TokenizerConfig(model=VAEConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1,
                                                            attn_resolutions=(), z_channels=4, embed_dim=4,
                                                            norm_groups=4)),
                  latents=LatentsConfig(flip=True, shard_size=SHARD, stats_count=1000, batch_size=8))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A run folder holding a randomly initialised tiny tokenizer, saved as train_tokenizer does."""
    config = _config()
    torch.manual_seed(0)
    model = build_autoencoder(config)
    with torch.no_grad():  # a non-zero mean per channel, so forgetting the stats is visible
        model.quant_conv.bias[:4].copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    run = tmp_path_factory.mktemp("tokenizer")
    torch.save({"model": model.state_dict(), "config": to_dict(config)}, run / "tokenizer.pt")
    return run


@pytest.fixture(scope="module")
def cache(tokenizer_dir, tmp_path_factory):
    return extract_latents(_config(), tokenizer_dir, tmp_path_factory.mktemp("latents") / "cache", progress=False)


def _reference(tokenizer_dir):
    """Latents of the training images and of their flips, encoded directly (the posterior mode)."""
    from vavae_lab.runs import load_tokenizer

    model = load_tokenizer(tokenizer_dir)
    images, labels = ShapesDataset(N, resolution=16, num_classes=5).get_batch(torch.arange(N))
    with torch.no_grad():
        return model.encode(images).mode(), model.encode(images.flip(-1)).mode(), labels


def test_shards_hold_latents_flips_and_labels_in_order(cache, tokenizer_dir):
    z, z_flip, labels = _reference(tokenizer_dir)
    shards = [load_file(cache / shard_name(i)) for i in range(3)]
    assert [s["labels"].shape[0] for s in shards] == [16, 16, 10]
    assert shards[0]["latents"].shape == (16, 4, 8, 8) and shards[0]["latents"].dtype == torch.float32
    assert shards[0]["labels"].dtype == torch.int64
    torch.testing.assert_close(torch.cat([s["latents"] for s in shards]), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([s["latents_flip"] for s in shards]), z_flip, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([s["labels"] for s in shards]), labels)
    assert not (cache / shard_name(3)).exists()


def test_stats_and_meta(cache, tokenizer_dir):
    z, _, _ = _reference(tokenizer_dir)
    stats = load_file(cache / STATS_FILE)
    assert stats["mean"].shape == (1, 4, 1, 1) and stats["std"].shape == (1, 4, 1, 1)
    torch.testing.assert_close(stats["mean"], z.mean(dim=(0, 2, 3), keepdim=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["std"], z.std(dim=(0, 2, 3), keepdim=True), atol=1e-5, rtol=1e-5)
    meta = json.loads((cache / "meta.json").read_text())
    assert list(meta)[-1] == "complete" and meta["complete"] is True
    assert meta["latent_shape"] == [4, 8, 8] and meta["num_images"] == N and meta["num_classes"] == 5
    assert meta["shards"] == [shard_name(i) for i in range(3)] and meta["stats"]["count"] == N
    assert meta["data"]["num_train"] == N and len(meta["identity"]["tokenizer_weights_sha256"]) == 64


def test_dataset_normalises_and_indexes_flips(cache, tokenizer_dir):
    z, z_flip, labels = _reference(tokenizer_dir)
    ds = LatentDataset(cache)
    assert len(ds) == 2 * N and ds.latent_shape == (4, 8, 8) and ds.num_classes == 5
    normed = (z - ds.mean) / ds.std
    assert normed.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (normed.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-4
    x, y = ds.get_batch([0, 5, N + 5, 2 * N - 1])
    torch.testing.assert_close(x[1], normed[5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x[2], ((z_flip - ds.mean) / ds.std)[5], atol=1e-4, rtol=1e-4)
    assert y.tolist() == labels[[0, 5, 5, N - 1]].tolist()
    items = [ds[i] for i in (0, 5, N + 5, 2 * N - 1)]
    assert torch.equal(torch.stack([item[0] for item in items]), x)
    assert [item[1] for item in items] == y.tolist()
    torch.testing.assert_close(ds.denormalize(ds.normalize(z)), z)
    raw = LatentDataset(cache, normalize=False, flip=False)
    assert len(raw) == N
    torch.testing.assert_close(raw.get_batch(torch.arange(N))[0], z, atol=1e-5, rtol=1e-5)
    with pytest.raises(IndexError):
        raw[N]


def test_memory_map_mode_matches_and_pickles(cache):
    in_ram, mapped = LatentDataset(cache, in_memory=True), LatentDataset(cache, in_memory=False)
    idx = torch.tensor([40, 3, 77, 3, 17, 60])
    for a, b in zip(in_ram.get_batch(idx), mapped.get_batch(idx)):
        assert torch.equal(a, b)
    clone = pickle.loads(pickle.dumps(mapped))  # what a DataLoader worker receives under spawn
    assert torch.equal(clone[50][0], in_ram[50][0])
    loader = torch.utils.data.DataLoader(mapped, batch_size=32)
    assert torch.equal(next(iter(loader))[0], in_ram.get_batch(torch.arange(32))[0])


def test_resume_skips_complete_shards_and_redoes_damaged_ones(cache, tokenizer_dir, tmp_path, monkeypatch):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    original = {i: {k: v.clone() for k, v in load_file(work / shard_name(i)).items()} for i in range(3)}
    calls = []
    real = cache_module.encode_batch

    def counting(model, images, **kw):
        calls.append(images.shape[0])
        return real(model, images, **kw)

    monkeypatch.setattr(cache_module, "encode_batch", counting)
    extract_latents(_config(), tokenizer_dir, work, progress=False)
    assert calls == []  # a complete cache is left alone
    data = (work / shard_name(2)).read_bytes()
    for i in (0, 2):
        (work / shard_name(i)).unlink()  # new files, not rewrites: the clones above stay valid
    (work / shard_name(0)).write_bytes(b"not a safetensors file")
    (work / shard_name(2)).write_bytes(data[:-100])  # a cut-off copy
    extract_latents(_config(), tokenizer_dir, work, progress=False)
    assert sum(calls) == 2 * (16 + 10)  # shards 0 and 2, each image and its flip
    for i in range(3):
        again = load_file(work / shard_name(i))
        assert all(torch.equal(again[k], original[i][k]) for k in original[i])
    assert read_meta(work)["complete"] is True


def test_other_config_in_same_folder_is_refused(cache, tokenizer_dir, tmp_path):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    with pytest.raises(ConfigError, match="different data"):
        extract_latents(_config(seed=3), tokenizer_dir, work, progress=False)


def test_wrong_stats_raise_a_clear_error(cache, tmp_path):
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    ds = LatentDataset(work)
    save_stats(work / STATS_FILE, ds.mean + 0.5 * ds.std, ds.std, N)
    with pytest.raises(DataError, match="do not match.*extract-latents"):
        LatentDataset(work)
    save_stats(work / STATS_FILE, torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1), N)  # "forgot to normalise"
    with pytest.raises(DataError, match="do not match"):
        LatentDataset(work)
    save_stats(work / STATS_FILE, torch.zeros(1, 8, 1, 1), torch.ones(1, 8, 1, 1), N)
    with pytest.raises(DataError, match="another"):
        LatentDataset(work)


def test_missing_or_incomplete_cache_raises(cache, tmp_path):
    with pytest.raises(DataError, match="does not exist.*extract-latents.*resumes"):
        LatentDataset(tmp_path / "nowhere")
    work = tmp_path / "cache"
    shutil.copytree(cache, work)
    (work / STATS_FILE).unlink()
    with pytest.raises(DataError, match="statistics .* missing"):
        LatentDataset(work)
    meta = json.loads((work / "meta.json").read_text())
    meta["complete"] = False
    (work / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="incomplete"):
        LatentDataset(work)
    (work / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json.*extract-latents"):
        LatentDataset(work)


def test_channel_stats_match_torch_in_chunks():
    z = torch.randn(37, 3, 2, 5) * torch.tensor([1.0, 3.0, 0.1]).view(1, 3, 1, 1) + 4.0
    mean, std = channel_stats(lambda idx: z[idx], torch.arange(37), chunk=5)
    torch.testing.assert_close(mean, z.mean(dim=(0, 2, 3), keepdim=True))
    torch.testing.assert_close(std, z.std(dim=(0, 2, 3), keepdim=True))
    subset = stats_subset(100, 10, seed=0)
    assert subset.tolist() == sorted(set(subset.tolist())) and len(subset) == 10
    assert torch.equal(stats_subset(100, 10, seed=0), subset) and stats_subset(5, 10, 0).tolist() == [0, 1, 2, 3, 4]


def test_normalize_by_hand():
    mean = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    std = torch.tensor([2.0, 0.5]).view(1, 2, 1, 1)
    z = torch.tensor([[[[3.0]], [[-1.0]]]])
    assert normalize(z, mean, std).flatten().tolist() == [1.0, 2.0]
    assert torch.equal(denormalize(normalize(z, mean, std), mean, std), z)


def test_image_folder_extraction_keeps_folder_order(tokenizer_dir, tmp_path):
    import numpy as np
    from PIL import Image

    from vavae_lab.data import ImageFolderDataset

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / c / f"{i}.png")
    config = _config(source="imagefolder", root=str(tmp_path / "images"))
    config.latents.shard_size = 4
    out = extract_latents(config, tokenizer_dir, tmp_path / "cache", progress=False)
    ds = LatentDataset(out, normalize=False, flip=False)
    assert ds.num_classes == 2 and len(ds) == 6 and ds.labels().tolist() == [0, 0, 0, 1, 1, 1]
    from vavae_lab.runs import load_tokenizer

    images = torch.stack([ImageFolderDataset(tmp_path / "images", 16)[i][0] for i in range(6)])
    with torch.no_grad():
        expected = load_tokenizer(tokenizer_dir).encode(images).mode()
    torch.testing.assert_close(ds.get_batch(torch.arange(6))[0], expected, atol=1e-5, rtol=1e-5)
