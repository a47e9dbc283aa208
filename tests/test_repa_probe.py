"""The REPA probe: a projector fitted alone on frozen tokens finds a target the tokens hold and not one they lack; the
tokens are the DiT's after block k on the transport's x_t; the probe's key; its verdicts' directions."""
import torch

from vavae_lab.analysis.repa_probe import (alignment_probe, block_tokens, class_position_mean_cos, feature_floors,
                                          fit_projector, position_mean_cos)
from vavae_lab.build import build_dit_for, build_transport_for
from vavae_lab.config import apply_overrides
from vavae_lab.diffusion.repa import repa_loss
from vavae_lab.keys import stage_key
from vavae_lab.latents import LatentDataset
from vavae_lab.latents.features import FeatureCache
from vavae_lab.presets import get_preset

FAST = {"draws": 1, "steps": 40, "batch": 32, "lr": 1e-3, "held_out": 0.25}


def _pairs(n, g, held_by_tokens: bool):
    """(tokens, targets) with targets a fixed function of the tokens, or drawn independently of them."""
    h = torch.randn(n, 4, 8, generator=g)
    w = torch.randn(8, 6, generator=g)
    y = torch.tanh(h @ w) + 0.5 if held_by_tokens else torch.randn(n, 4, 6, generator=g) + 0.5
    return h, y


def test_the_projector_finds_a_target_the_tokens_hold_and_not_one_they_lack():
    g = torch.Generator().manual_seed(0)
    for held, check in ((True, lambda out, floor: out["cos_test"] > 0.9 and out["cos_test"] > floor + 0.2),
                        (False, lambda out, floor: out["cos_test"] < floor + 0.05)):
        h, y = _pairs(1200, g, held)
        out = fit_projector((h[:1000], y[:1000]), (h[1000:], y[1000:]), projector_dim=32, steps=600, batch=64,
                            lr=3e-3, seed=0)
        floor = position_mean_cos(y[:1000], y[1000:])
        assert check(out, floor), (held, out["cos_test"], floor)
        assert len(out["curve"]) == 10 and out["curve"][-1]["cos_test"] == out["cos_test"]


def test_the_constant_prediction_is_each_positions_mean():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(50, 3, 5, generator=g), torch.randn(20, 3, 5, generator=g)
    by_hand = -repa_loss(train.mean(0).expand(20, 3, 5), test).mean()
    assert abs(position_mean_cos(train, test) - float(by_hand)) < 1e-6


def test_the_class_mean_prediction_is_each_classs_mean_and_beats_the_position_mean_when_classes_differ():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(3, 4, 5, generator=g) * 3
    labels = torch.arange(90) % 3
    feats = centres[labels] + torch.randn(90, 4, 5, generator=g)
    fit, held = slice(0, 60), slice(60, 90)
    means = torch.stack([feats[fit][labels[fit] == c].mean(0) for c in range(3)])
    by_hand = -repa_loss(means[labels[held]], feats[held]).mean()
    got = class_position_mean_cos(feats[fit], labels[fit], feats[held], labels[held])
    assert abs(got - float(by_hand)) < 1e-6 and got > position_mean_cos(feats[fit], feats[held]) + 0.2


def _tiny_cache(tmp_path):
    """A smoke-sized latent cache and the toy_random VFM features of the same images (as tests/test_repa.py)."""
    from vavae_lab.build import build_autoencoder
    from vavae_lab.checkpoint import atomic_save
    from vavae_lab.config import to_dict
    from vavae_lab.latents import extract_latents
    from vavae_lab.pipeline import features

    config = apply_overrides(get_preset("smoke"), [
        "data.num_train=64", "data.num_test=16", "device=cpu", "latents.shard_size=64", "latents.stats_count=64",
        "latents.batch_size=32", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4",
        "dit.repa.foundation=toy_random", "dit.repa.depth=1", "dit.repa.projector_dim=16"])
    torch.manual_seed(0)
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                tmp_path / "tok" / "tokenizer.pt")
    extract_latents(config, tmp_path / "tok", tmp_path / "latents", progress=False)
    return config, LatentDataset(tmp_path / "latents"), FeatureCache(features(config, folder=tmp_path / "features"))


def test_the_tokens_are_the_dits_after_block_k_on_the_transports_noisy_latents(tmp_path):
    config, data, feats = _tiny_cache(tmp_path)
    torch.manual_seed(0)
    model = build_dit_for(config, data.latent_shape, data.num_classes)
    transport = build_transport_for(config)
    items = torch.arange(10)
    h, y = block_tokens(model, transport, data, feats, items, 1, draws=2, seed=3, batch=4)
    tokens = (data.latent_shape[1] // model.patch_size) ** 2
    assert h.shape == (20, tokens, model.config["hidden_size"]) and y.shape == (20, tokens, feats.dim)
    assert torch.equal(y[:10], y[10:]) and torch.equal(y[:10], feats.get_batch(items).float())
    g = torch.Generator().manual_seed(3)  # the first batch by hand: t, then the noise, from the probe's stream
    x, labels = data.get_batch(items[:4])
    t = transport.sample_t(4, generator=g)
    x_t = transport.interpolate(x, torch.randn(x.shape, generator=g), t)
    with torch.no_grad():
        assert torch.allclose(model(x_t, t, labels, hidden_block=1)[1], h[:4])
    again, _ = block_tokens(model, transport, data, feats, items, 1, draws=2, seed=3, batch=4)
    other, _ = block_tokens(model, transport, data, feats, items, 1, draws=2, seed=4, batch=4)
    assert torch.equal(again, h) and not torch.allclose(other, h)
    floors = feature_floors(data, feats, FAST["held_out"])
    assert floors["held_out_images"] == 16 and all(-1 <= floors[k] <= 1 for k in ("position_mean", "class_position_mean"))
    out = alignment_probe(model, transport, data, feats, depth=1, projector_dim=16, fit=FAST)
    assert out["images"] == data.num_images and out["held_out_images"] == 16 and -1 <= out["cos_test"] <= 1


def test_the_probe_of_the_plain_dit_keys_on_the_plain_dit_and_on_its_fit():
    base = get_preset("lab")
    repa = ["dit.repa.weight=0.5", "dit.repa.depth=1", "dit.repa.projector_dim=192", "dit.repa.foundation=toy"]
    plain = apply_overrides(base, [*repa, "dit.repa.weight=0"])
    with_repa = apply_overrides(base, repa)
    assert stage_key(plain, "dit") == stage_key(base, "dit") != stage_key(with_repa, "dit")
    fit = {**FAST, "weights": "trained"}
    keys = {stage_key(c, "alignment", settings=s) for c in (plain, with_repa)
            for s in (fit, {**fit, "weights": "init"}, {**fit, "steps": 41})}
    keys.add(stage_key(apply_overrides(plain, ["dit.repa.depth=2"]), "alignment", settings=fit))
    assert len(keys) == 7


def test_the_probe_verdicts_ask_whether_training_and_then_repa_align_block_k():
    from vavae_lab.study.repa import probe_verdicts
    from vavae_lab.study.runner import Study

    def row(dit, cos):
        return {"tokenizer": "f8d16", "dit": dit, "cos_seeds": cos, "cos_spread": max(cos) - min(cos)}

    rows = [row("init", [0.55, 0.56]), row("plain", [0.90, 0.91]), row("repa", [0.90, 0.905])]
    verdicts = [v["verdict"] for v in probe_verdicts(Study("smoke", progress=False), rows)]
    assert verdicts[0] == "shown" and verdicts[1] != "shown"
