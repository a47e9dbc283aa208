"""Tests for the frozen foundation models: toy VFM pretraining and caching, timm ViT loading, offline errors."""
import socket
from dataclasses import dataclass

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from vavae_lab.download import is_offline
from vavae_lab.errors import CheckpointError, ConfigError, WeightsUnavailableError
from vavae_lab.tokenizer import toy_vfm
from vavae_lab.tokenizer.foundation import FoundationModel, build_foundation_model
from vavae_lab.tokenizer.toy_vfm import (ToyVFM, ToyVFMConfig, cell_targets, coerce_toy_config, get_toy_vfm,
                                         linear_probe, masked_loss, random_cell_mask, toy_vfm_cache_path)

TINY = ToyVFMConfig(width=8, feature_dim=16, steps=4, batch_size=16, num_images=200)
VIT = "vit_small_patch14_dinov2.lvd142m"
VIT_REG = "vit_small_patch14_reg4_dinov2.lvd142m"
TINY_VIT = dict(depth=1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Point the cache at a temporary folder and clear offline variables for every test."""
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    for var in ("VAVAE_LAB_OFFLINE", "HF_HUB_OFFLINE", "TIMM_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Make any socket connection fail loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _images(b=2, size=32):
    return torch.rand(b, 3, size, size) * 2 - 1


@pytest.mark.parametrize("grid", [8, 4, 16])
def test_toy_features_on_requested_grid(grid):
    fm = build_foundation_model("toy_random", grid=grid, toy_config=TINY)
    out = fm(_images(3))
    assert out.shape == (3, TINY.feature_dim, grid, grid)
    assert fm.dim == TINY.feature_dim and fm.grid == grid and fm.name == "toy_random"


def test_toy_grid_pooling_matches_average_of_native_cells():
    fm8 = build_foundation_model("toy_random", grid=8, toy_config=TINY)
    fm4 = build_foundation_model("toy_random", grid=4, toy_config=TINY)
    x = _images(2)
    assert torch.allclose(fm4(x), F.avg_pool2d(fm8(x), 2), atol=1e-6)


def test_toy_random_is_deterministic_per_seed():
    a = build_foundation_model("toy_random", grid=8, toy_config=TINY)
    b = build_foundation_model("toy_random", grid=8, toy_config=TINY)
    c = build_foundation_model("toy_random", grid=8, toy_config=ToyVFMConfig(**{**TINY.__dict__, "seed": 1}))
    x = _images(2)
    assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))


def test_frozen_even_when_parent_trains():
    fm = build_foundation_model("toy_random", grid=8, toy_config=TINY)
    parent = nn.ModuleDict({"vfm": fm, "proj": nn.Conv2d(4, 16, 1)})
    parent.train()
    assert parent["proj"].training and not fm.training and not any(m.training for m in fm.modules())
    assert not any(p.requires_grad for p in fm.parameters())
    x = _images(2).requires_grad_(True)
    assert not fm(x).requires_grad


def test_weights_left_out_of_parent_checkpoints_and_strict_load_works():
    fm = build_foundation_model("toy_random", grid=8, toy_config=TINY)
    parent = nn.ModuleDict({"vfm": fm, "proj": nn.Conv2d(4, 16, 1)})
    state = parent.state_dict()
    assert set(state) == {"proj.weight", "proj.bias"}
    before = fm(_images(1, 32).zero_())
    parent.load_state_dict(state, strict=True)
    assert torch.equal(fm(_images(1, 32).zero_()), before)


def test_pretrain_and_cache_hit_without_retraining(monkeypatch):
    model = get_toy_vfm(TINY, progress=False)
    path = toy_vfm_cache_path(TINY)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["width"] == TINY.width and "test_accuracy" in blob["history"]
    assert len(blob["history"]["loss"]) == TINY.steps

    def fail(*args, **kwargs):
        raise AssertionError("retrained although the cache holds this config")
    monkeypatch.setattr(toy_vfm, "pretrain_toy_vfm", fail)
    again = get_toy_vfm(TINY)
    for (k, v), (_, w) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, w), k
    assert again.history["test_accuracy"] == model.history["test_accuracy"]
    fm = build_foundation_model("toy", grid=4, toy_config=TINY)
    assert fm(_images(2)).shape == (2, TINY.feature_dim, 4, 4)
    assert torch.equal(fm.net.out[2].weight, model.out[2].weight)


def test_cache_miss_when_config_changes(monkeypatch):
    get_toy_vfm(TINY, progress=False)
    calls = []
    real = toy_vfm.pretrain_toy_vfm

    def counting(cfg, **kwargs):
        calls.append(cfg)
        return real(cfg, **kwargs)
    monkeypatch.setattr(toy_vfm, "pretrain_toy_vfm", counting)
    other = ToyVFMConfig(**{**TINY.__dict__, "lr": 1e-3})
    get_toy_vfm(other, progress=False)
    assert len(calls) == 1 and toy_vfm_cache_path(other) != toy_vfm_cache_path(TINY)


def test_masked_objective_trains_and_reports_masked_loss():
    cfg = ToyVFMConfig(**{**TINY.__dict__, "objective": "masked"})
    model, history = toy_vfm.pretrain_toy_vfm(cfg, progress=False)
    assert history["test_masked_loss"] > 0 and 0.0 <= history["probe_accuracy"] <= 1.0
    assert model(_images(2)).shape == (2, 16, 8, 8)


def test_corrupt_cache_file_raises_checkpoint_error():
    path = toy_vfm_cache_path(TINY)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete the file"):
        get_toy_vfm(TINY)


def test_cell_targets_by_hand():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2] = True  # 2 of the 4 pixels of the top-left 2x2 cell
    masks[0, 2:, 2:] = True  # the whole bottom-right cell
    t = cell_targets(masks, torch.tensor([3]), stride=2, num_classes=5)
    assert t.shape == (1, 6, 2, 2)
    assert torch.allclose(t[0, 3], torch.tensor([[0.5, 0.0], [0.0, 1.0]]))
    assert torch.allclose(t[0, 5], torch.tensor([[0.5, 1.0], [1.0, 0.0]]))
    assert torch.allclose(t.sum(1), torch.ones(1, 2, 2))


def test_random_cell_mask_hides_the_requested_fraction():
    m = random_cell_mask(5, 8, 0.6, torch.Generator().manual_seed(0))
    assert m.shape == (5, 8, 8) and (m.flatten(1).sum(1) == round(0.6 * 64)).all()


def test_masked_loss_only_counts_hidden_cells():
    model = ToyVFM(ToyVFMConfig(**{**TINY.__dict__, "objective": "masked"}))
    x = _images(2)
    cells = random_cell_mask(2, 8, 0.5, torch.Generator().manual_seed(0))
    hidden = cells[:, None].float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    model.reconstruct = lambda feats: x + 5.0 * (1 - hidden)  # perfect on hidden pixels, wrong elsewhere
    assert masked_loss(model, x, cells).item() == pytest.approx(0.0, abs=1e-12)
    model.reconstruct = lambda feats: x + 0.5 * hidden
    assert masked_loss(model, x, cells).item() == pytest.approx(0.25)


def test_linear_probe_separates_informative_features_only():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (600,), generator=g)
    noise = torch.randn(600, 8, generator=g)
    informative = noise + 4.0 * F.pad(F.one_hot(y, 5).float(), (0, 3))
    assert linear_probe(informative[:400], y[:400], informative[400:], y[400:], 5) > 0.95
    assert linear_probe(noise[:400], y[:400], noise[400:], y[400:], 5) < 0.4


def test_toy_vfm_config_is_the_config_section_plus_derived_fields():
    from vavae_lab.toy_recipes import ToyVFMSection

    assert issubclass(ToyVFMConfig, ToyVFMSection)
    assert coerce_toy_config(ToyVFMSection(width=8)) == ToyVFMConfig(width=8)
    assert ToyVFMConfig().cache_key() == "20e6e0f6115b"  # the cache key of the default toy VFM, unchanged
    assert ToyVFMConfig(shape_set="outline").cache_key() != "20e6e0f6115b"
    with pytest.raises(ConfigError, match="ToyVFMSection"):
        coerce_toy_config("smoke")


def test_toy_config_validation_and_coercion():
    @dataclass
    class Section:
        objective: str = "masked"
        width: int = 8

    cfg = coerce_toy_config(Section())
    assert cfg.objective == "masked" and cfg.width == 8 and cfg.grid == 8
    with pytest.raises(ConfigError, match="unknown toy VFM config keys"):
        coerce_toy_config({"widht": 8})
    with pytest.raises(ConfigError, match="objective"):
        coerce_toy_config({"objective": "contrastive"})
    with pytest.raises(ConfigError, match="power of two"):
        coerce_toy_config({"grid": 6})


def _save_vit(path, name=VIT, **kwargs):
    model = timm.create_model(name, pretrained=False, **TINY_VIT, **kwargs).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return model


@pytest.mark.parametrize("name,ext", [(VIT, "safetensors"), (VIT_REG, "pth"), (VIT, "bin")])
def test_timm_vit_from_file_equals_manual_forward(tmp_path, no_network, name, ext):
    ref = _save_vit(tmp_path / f"w.{ext}", name, img_size=224)
    fm = build_foundation_model(name, grid=16, pretrained_path=tmp_path / f"w.{ext}", offline=True,
                                timm_kwargs=TINY_VIT)
    assert fm.dim == 384 and fm.input_size == 224
    images = _images(2, 256)
    out = fm(images)
    assert out.shape == (2, 384, 16, 16)
    x = F.interpolate((images + 1) / 2, size=(224, 224), mode="bicubic", antialias=True, align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = ref.forward_features(x)
    skip = 5 if "reg4" in name else 1
    assert tokens.shape[1] == 256 + skip
    manual = tokens[:, skip:].reshape(2, 16, 16, 384).permute(0, 3, 1, 2)
    assert torch.allclose(out, manual, atol=1e-5)


def test_timm_file_at_other_resolution_gets_position_embeddings_resized(tmp_path, no_network):
    _save_vit(tmp_path / "w518.safetensors")  # the DINOv2 default: 518 px, 37 x 37 position embeddings
    fm = build_foundation_model(VIT, grid=8, pretrained_path=tmp_path / "w518.safetensors", timm_kwargs=TINY_VIT)
    assert fm.net.pos_embed.shape[1] == 8 * 8 + 1
    assert fm(_images(1, 64)).shape == (1, 384, 8, 8)


def test_registry_name_maps_to_timm(tmp_path, no_network):
    _save_vit(tmp_path / "w.pth", img_size=224)
    fm = build_foundation_model("dinov2_vits14", grid=16, pretrained_path=tmp_path / "w.pth", timm_kwargs=TINY_VIT)
    assert fm.num_prefix_tokens == 1 and fm.name == "dinov2_vits14"


def test_offline_without_file_fails_fast_and_explains(no_network):
    with pytest.raises(WeightsUnavailableError) as err:
        build_foundation_model("dinov2_vitl14", grid=16, offline=True)
    msg = str(err.value)
    assert "pretrained_path" in msg and "timm/vit_large_patch14_dinov2.lvd142m" in msg and "dinov2_vitl14" in msg


def test_hub_failure_online_is_chained_into_weights_error(no_network):
    with pytest.raises(WeightsUnavailableError, match="pretrained_path") as err:
        build_foundation_model(VIT, grid=16, offline=False, timm_kwargs=TINY_VIT)
    assert err.value.__cause__ is not None


def test_offline_env_variable_is_honoured(monkeypatch, no_network):
    assert not is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_offline()
    with pytest.raises(WeightsUnavailableError, match="vf.pretrained_path"):
        build_foundation_model("mae_vitl16", grid=16)


def test_missing_file_names_the_path(tmp_path, no_network):
    missing = tmp_path / "nowhere" / "dinov2.safetensors"
    with pytest.raises(WeightsUnavailableError, match="nowhere"):
        build_foundation_model("dinov2_vits14", grid=16, pretrained_path=missing)


def test_wrong_architecture_file_raises_checkpoint_error(tmp_path, no_network):
    torch.save(nn.Linear(3, 4).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(CheckpointError, match="linear.pth"):
        build_foundation_model(VIT, grid=16, pretrained_path=tmp_path / "linear.pth", timm_kwargs=TINY_VIT)
    model = timm.create_model(VIT, pretrained=False, depth=2, img_size=224)
    torch.save(model.state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError):
        build_foundation_model(VIT, grid=16, pretrained_path=tmp_path / "deeper.pth", timm_kwargs=TINY_VIT)


def test_unknown_name_and_bad_grid_raise_config_error():
    with pytest.raises(ConfigError, match="unknown foundation model"):
        build_foundation_model("dinov3_made_up", grid=16)
    with pytest.raises(ConfigError, match="grid"):
        build_foundation_model("toy_random", grid=0)


def test_random_timm_control_needs_no_weights(no_network):
    fm = build_foundation_model(VIT + "_random", grid=4, timm_kwargs=TINY_VIT)
    assert isinstance(fm, FoundationModel) and fm(_images(1, 32)).shape == (1, 384, 4, 4)


def test_official_preprocess_is_the_hustvl_dinov2_forward(tmp_path, no_network):
    """preprocess="official" feeds the [-1, 1] images, bilinearly resized to 224 without antialias and without
    mean/std, to a ViT whose 518 px position embeddings are resized on the fly, and drops the class token
    (hustvl vavae/ldm/models/foundation_models.py 52-57); a stand-in tiny DINOv2 shows it equals that forward."""
    ref = _save_vit(tmp_path / "w518.safetensors")  # the DINOv2 default: 518 px, 37 x 37 position embeddings
    official = timm.create_model(VIT, pretrained=False, dynamic_img_size=True, **TINY_VIT).eval()
    official.load_state_dict(ref.state_dict())
    images = _images(2, 256)
    with torch.no_grad():
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
        expected = official.forward_features(x)[:, 1:].reshape(2, 16, 16, -1).permute(0, 3, 1, 2)
    fm = build_foundation_model(VIT, grid=16, pretrained_path=tmp_path / "w518.safetensors", timm_kwargs=TINY_VIT,
                                preprocess="official")
    assert fm.preprocess == "official" and "preprocess=official" in repr(fm)
    assert torch.allclose(fm(images), expected, atol=1e-5)
    normalized = build_foundation_model(VIT, grid=16, pretrained_path=tmp_path / "w518.safetensors",
                                        timm_kwargs=TINY_VIT)
    assert normalized.preprocess == "normalized"  # the default keeps the project's variant (see the test above)
    assert (normalized(images) - expected).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="tokenizer.vf.preprocess='imagenet'"):
        build_foundation_model("toy_random", grid=8, toy_config=TINY, preprocess="imagenet")


def test_config_preprocess_reaches_the_foundation_model(monkeypatch):
    from vavae_lab.config import load_config
    from vavae_lab.tokenizer import foundation
    from vavae_lab.build import build_vfm

    seen = {}
    monkeypatch.setattr(foundation, "build_foundation_model", lambda name, **kw: seen.update(name=name, **kw))
    build_vfm(load_config("imagenet256_f16d32_vf"), torch.device("cpu"))
    assert seen["name"] == "dinov2_vitl14" and seen["preprocess"] == "official" and seen["grid"] == 16
    build_vfm(load_config("lab"), torch.device("cpu"))
    assert seen["name"] == "toy" and seen["preprocess"] == "normalized"
    with pytest.raises(ConfigError, match="tokenizer.vf.preprocess='raw'.*one of normalized, official"):
        load_config("lab", ["tokenizer.vf.preprocess=raw"])
