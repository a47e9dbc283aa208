"""The toy FID as a yardstick: the Fréchet formula, the degradation battery on both networks, one protocol for rFID
and gFID, and the error for too few samples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric

from vavae_lab.data.shapes import ShapesDataset, generate_shapes, shape_factors
from vavae_lab.errors import DataError
from vavae_lab.metrics import battery_checks, corrupt, degradation_battery, frechet_distance, gaussian_stats
from vavae_lab.metrics.battery import CORRUPTIONS
from vavae_lab.metrics.toy_factors import FACTORS, factor_targets, num_targets
from vavae_lab.metrics.toy_features import ToyFeatureConfig, get_toy_feature_net


@pytest.fixture
def toy_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path))
    return tmp_path


def _features(seed: int, n: int = 600, d: int = 24, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=g) @ mix + shift


def test_frechet_distance_equals_torch_fidelity():
    a, b = _features(0), _features(1, shift=0.3)
    mine = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    stats = [{"mu": mu.numpy(), "sigma": s.numpy()} for mu, s in (gaussian_stats(a), gaussian_stats(b))]
    theirs = float(fid_statistics_to_metric(stats[0], stats[1], False)["frechet_inception_distance"])
    assert mine == pytest.approx(theirs, rel=1e-6, abs=1e-9)
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(a)) == pytest.approx(0.0, abs=1e-9)
    assert mine > 0.3 ** 2 * 24 * 0.5  # the mean shift alone is 0.09 per dimension


def test_too_few_samples_for_the_feature_dimension_is_one_clear_error():
    with pytest.raises(DataError, match="more images than feature dimensions: got 24 images for 24"):
        gaussian_stats(_features(0, n=24))


def test_shape_factors_are_the_generators_own():
    f = shape_factors(1234, seed=7)
    assert torch.equal(f["labels"], generate_shapes(1234, 16, 7)["labels"])
    targets, mask = factor_targets(f)
    assert targets.shape == mask.shape == (1234, sum(FACTORS.values())) and num_targets() == targets.shape[1] + 2
    assert torch.isfinite(targets).all() and 0 < mask.mean() < 1  # rotation of round shapes, patterns: masked
    # every factor varies across images, so each is something to learn
    assert (targets.std(0) > 1e-3).all()
    # the outline set: the fill is no longer the class, so striped? and checkered? are targets of their own
    o = shape_factors(1234, seed=7, shape_set="outline")
    targets, mask = factor_targets(o, "outline")
    assert targets.shape[1] == targets.shape[1] == num_targets("outline") - 2 == sum(FACTORS.values()) + 2
    assert (targets.std(0) > 1e-3).all() and torch.equal(mask[:, -2], (o["pattern"] > 0).float())


def test_corruptions_do_what_they_say():
    pool = ShapesDataset(600, 32, 0, "test")
    n = 100
    grey, _ = corrupt(pool.images, pool.labels, "desaturate", 1.0, n)
    assert (grey.max(1).values - grey.min(1).values).max() <= 1  # all three channels equal, up to rounding
    kept, labels = corrupt(pool.images, pool.labels, "drop classes", 5.0, n)
    assert labels.max() < 5 and len(kept) == n
    same, _ = corrupt(pool.images, pool.labels, "none", 0.0, n)
    assert torch.equal(same, pool.images[:n])
    shuffled, _ = corrupt(pool.images, pool.labels, "shuffle patches", 8.0, n)
    assert torch.equal(shuffled.float().mean((1, 2, 3)), pool.images[:n].float().mean((1, 2, 3)))  # same pixels
    blurred = [corrupt(pool.images, pool.labels, "blur", s, n)[0].float() for s in CORRUPTIONS["blur"]]
    edges = [float((b[..., 1:] - b[..., :-1]).abs().mean()) for b in blurred]
    assert edges[0] > edges[1] > edges[2]  # a stronger blur leaves softer edges
    with pytest.raises(DataError, match="held-out pool has"):
        corrupt(pool.images[:200], pool.labels[:200], "drop classes", 8.0, n)


def _battery(config: ToyFeatureConfig, n: int = 2000) -> list[dict]:
    net = get_toy_feature_net(config, progress=False)
    reference = ShapesDataset(5000, 32, 0, "train").images
    pool = ShapesDataset(5 * n, 32, 0, "test")
    return degradation_battery(net, reference, pool.images, pool.labels, n=n)


@pytest.mark.slow
def test_multi_factor_network_passes_every_property_of_the_battery(toy_cache):
    # version 2 at the toy preset's 600 steps (about a minute on 2 cores); the lab's switch trains 1,500
    rows = _battery(ToyFeatureConfig(version=2))
    failed = [c for c in battery_checks(rows) if not c["passed"]]
    assert not failed, failed
    fid = {r["label"]: r["fid"] for r in rows}
    assert fid["desaturate 100%"] > 20 * fid["none"]  # greyscale is seen (the classifier's FID did not move)


@pytest.mark.slow
def test_shape_classifier_is_colour_blind_and_blur_dominated(toy_cache):
    # version 1, small: the failures the battery was built to show, stated as properties of the old network
    rows = _battery(ToyFeatureConfig(steps=300, num_images=10000, width=16, feature_dim=64), n=1000)
    checks = {c["property"]: c["passed"] for c in battery_checks(rows)}
    assert not checks["colour changes are seen"]
    assert not checks["no mild corruption dominates"]
    fid = {r["label"]: r["fid"] for r in rows}
    assert fid["desaturate 100%"] < 2 * fid["none"] < fid["blur sigma 1.0 px"] / 10


def test_one_protocol_a_perfect_tokenizer_scores_the_floor(toy_cache, monkeypatch):
    """rFID is scored exactly as samples are: reconstructions by an identity tokenizer give the floor's numbers."""
    from vavae_lab import pipeline
    from vavae_lab.config import apply_overrides
    from vavae_lab.presets import get_preset

    class Identity(torch.nn.Module):
        def encode(self, x):
            return type("Posterior", (), {"mode": lambda self_: x})()

        def decode(self, z):
            return z

    config = apply_overrides(get_preset("smoke"), {"sample.num_samples": 200, "data.num_test": 200})
    monkeypatch.setattr(pipeline, "tokenizer", lambda config, root=None: (Identity(), {}))
    recon, floor = pipeline.reconstruction(config), pipeline.real_floor(config)
    for key in ("fid", "kid", "precision", "recall", "class_acc"):
        assert recon[key] == pytest.approx(floor[key], rel=1e-9, abs=1e-12), key
    assert recon["n"] == floor["n"] == 200 and recon["psnr"] > 60  # nothing lost
    assert np.isfinite(recon["kid_std"])


def test_claims_say_where_class_accuracy_and_kid_disagree_with_fid():
    from vavae_lab.study.tables import claim

    low = {"gfid_seeds": [50.0, 52.0], "gfid_spread": 2.0, "class_acc": 0.40, "class_acc_n": 4000, "kid": 0.010,
           "kid_std": 0.001}
    high = {"gfid_seeds": [70.0, 75.0], "gfid_spread": 5.0, "class_acc": 0.45, "class_acc_n": 4000, "kid": 0.020,
            "kid_std": 0.001}
    row = claim("d32 worse than d4", low, high)
    assert row["verdict"] == "shown"
    readings = row["readings"]
    assert "class acc. DISAGREES with gFID (0.4 -> 0.45)" in readings and "KID agrees with gFID" in readings
    # within two standard errors (binomial for 4,000 samples: 0.011 each) a reading is level, not a disagreement
    near = claim("close", low, {**high, "class_acc": 0.41})
    assert "class acc. level (0.4 -> 0.41)" in near["readings"]
    assert claim("no readings", {k: low[k] for k in ("gfid_seeds", "gfid_spread")},
                 {k: high[k] for k in ("gfid_seeds", "gfid_spread")})["readings"] == "-"


class _FirstPixelNet(torch.nn.Module):
    """Names class round(red of the top-left pixel / 20) out of 4: a classifier whose answer a test can set."""

    def forward(self, x):
        k = ((x[:, 0, 0, 0] + 1) * 127.5 / 20).round().long().clamp(0, 3)
        return torch.nn.functional.one_hot(k, 4).float()


def test_class_accuracy_overall_and_by_class_count_the_classes_named():
    from vavae_lab.metrics.toy_features import accuracy_by_class, evaluate_accuracy, predict_classes

    named = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    labels = torch.tensor([0, 1, 1, 2, 2, 0, 1])
    images = torch.zeros(7, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = named * 20
    net = _FirstPixelNet()
    assert torch.equal(predict_classes(net, images, batch_size=3), named)
    assert evaluate_accuracy(net, images, labels, batch_size=3) == evaluate_accuracy(net, images, labels) == 5 / 7
    assert accuracy_by_class(named, labels, 4) == pytest.approx([0.5, 2 / 3, 1.0, None])  # class 3: no image


def test_seeded_gfid_keeps_each_runs_class_accuracy_beside_the_mean():
    from vavae_lab.study.tables import seeded_gfid

    class TwoRuns:  # a study whose two seed runs score differently; the CFG runs carry one more override
        def seed_runs(self):
            return [(), ("dit.seed=1",)]

        def generation(self, name, *extra):
            return {"fid": 10.0 + len(extra), "class_acc": 0.5 + 0.25 * len(extra), "n": 100}

    out = seeded_gfid(TwoRuns(), "d4")
    assert out["class_acc_seeds"] == [0.5, 0.75] and out["class_acc"] == 0.625 and out["class_acc_n"] == 200
    guided = seeded_gfid(TwoRuns(), "d4", "gfid_cfg", "sample.cfg_scale=3.0")
    assert guided["class_acc_cfg_seeds"] == [0.75, 1.0] and guided["gfid_cfg_seeds"] == [11.0, 12.0]


def test_the_two_networks_overrides_give_each_studys_own_network():
    """toy_fid_v1 / toy_fid_v2 on any toy preset score with lab_classic's and lab's networks, smoke keeps its steps."""
    from vavae_lab import load_config
    from vavae_lab.presets import toy_fid_v1, toy_fid_v2

    for preset in ("lab", "lab_classic"):
        assert load_config(preset, list(toy_fid_v1(preset))).metrics.toy == load_config("lab_classic").metrics.toy
        assert load_config(preset, list(toy_fid_v2(preset))).metrics.toy == load_config("lab").metrics.toy
    smoke = load_config("smoke")
    for overrides, version in ((toy_fid_v1("smoke"), 1), (toy_fid_v2("smoke"), 2)):
        toy = load_config("smoke", list(overrides)).metrics.toy
        assert (toy.version, toy.steps) == (version, smoke.metrics.toy.steps)


def test_the_toy_fid_network_is_the_same_whatever_thread_count_trains_it(tmp_path, monkeypatch):
    """Every gFID is read through this network: a notebook (two threads) and a study job (one) must train the same
    weights, or numbers from two caches are read with two yardsticks. The caller's thread count is restored."""
    config = ToyFeatureConfig(steps=30, num_images=512, width=16, feature_dim=64)
    weights = []
    before = torch.get_num_threads()
    for threads in (2, 1):
        monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / f"threads{threads}"))
        torch.set_num_threads(threads)
        try:
            weights.append(get_toy_feature_net(config, progress=False).state_dict())
            assert torch.get_num_threads() == threads
        finally:
            torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_readings_run_in_the_order_the_claim_names_its_rows():
    """Notebook 01's (a) rows read "f8d4 -> f8d16" while rFID's claim holds the larger d as `low`: the class accuracy
    and KID beside it must still run d4 -> d16; an ablation's "better than no VF" runs no VF -> the ablation."""
    from vavae_lab.study.claims import ablation_claims, dilemma_claims

    def row(name, d, rfid, gfid):
        return {"name": name, "rfid_seeds": [rfid, rfid + 0.1], "rfid_spread": 0.1, "recon_class_acc": 0.9 + d / 1000,
                "recon_class_acc_n": 2000, "gfid_seeds": [gfid, gfid + 0.1], "gfid_spread": 0.1,
                "class_acc": 0.6 - d / 1000, "class_acc_n": 2000}

    a_head = dilemma_claims([row("d4", 4, 3.0, 1.0), row("d8", 8, 2.0, 2.0), row("d16", 16, 1.0, 3.0)])[0]
    assert a_head["claim"].startswith("(a)") and "d4 -> d16" in a_head["claim"]
    assert "(0.904 -> 0.916)" in a_head["readings"]
    b_head = dilemma_claims([row("d4", 4, 3.0, 1.0), row("d8", 8, 2.0, 2.0), row("d16", 16, 1.0, 3.0)])[3]
    assert b_head["claim"].startswith("(b)") and "(0.596 -> 0.584)" in b_head["readings"]
    worse, better = ablation_claims([row("none", 0, 1.0, 5.0), row("full", 1, 1.0, 1.0), row("abl", 2, 1.0, 3.0)])
    assert "(full -> abl)" in worse["claim"] and "(0.599 -> 0.598)" in worse["readings"]
    assert "(none -> abl)" in better["claim"] and "(0.6 -> 0.598)" in better["readings"]
