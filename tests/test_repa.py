"""REPA: the loss by hand, where its gradients go, lambda = 0, sampling without the projector, exact resume, keys."""
import pytest
import torch

from vavae_lab.build import build_autoencoder, build_dit_for
from vavae_lab.checkpoint import atomic_save
from vavae_lab.config import apply_overrides, to_dict
from vavae_lab.diffusion.repa import Repa, repa_loss
from vavae_lab.diffusion.transport import build_transport
from vavae_lab.errors import ConfigError
from vavae_lab.latents.features import FeatureCache
from vavae_lab.keys import stage_key
from vavae_lab.pipeline import features
from vavae_lab.presets import PRESETS, get_preset
from vavae_lab.runs import load_dit
from vavae_lab.train.dit import fit_dit, train_dit

TINY = ["data.num_train=96", "data.num_test=16", "device=cpu", "latents.shard_size=64", "latents.stats_count=96",
        "latents.batch_size=32", "tokenizer.model.embed_dim=4", "tokenizer.model.z_channels=4", "dit.train.steps=6",
        "dit.train.ckpt_every=3", "dit.train.log_every=3", "dit.train.batch_size=16", "dit.train.progress=false",
        "dit.repa.foundation=toy_random", "dit.repa.depth=1", "dit.repa.projector_dim=16", "dit.repa.weight=0.5"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny random tokenizer's latent cache and the VFM feature cache of the same images."""
    from vavae_lab.latents import extract_latents

    root = tmp_path_factory.mktemp("repa")
    config = apply_overrides(get_preset("smoke"), TINY)
    torch.manual_seed(0)
    atomic_save({"model": build_autoencoder(config).state_dict(), "config": to_dict(config)},
                root / "tok" / "tokenizer.pt")
    extract_latents(config, root / "tok", root / "latents", progress=False)
    return config, root / "latents", features(config, folder=root / "features")


def test_loss_by_hand_equals_the_library():
    torch.manual_seed(0)
    projected, target = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    by_hand = torch.zeros(3)
    for b in range(3):
        for n in range(5):
            p, t = projected[b, n], target[b, n]
            by_hand[b] -= (p @ t) / (p.norm() * t.norm()) / 5
    assert torch.allclose(repa_loss(projected, target), by_hand, atol=1e-6)
    assert torch.allclose(repa_loss(target, target), -torch.ones(3), atol=1e-6)  # aligned: the minimum, -1


def test_projector_is_repas_mlp_and_mismatched_shapes_say_so():
    repa = Repa(hidden_size=8, feature_dim=5, depth=1, weight=0.5, projector_dim=12)
    assert [type(m).__name__ for m in repa.projector] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]
    assert repa.projector(torch.zeros(2, 3, 8)).shape == (2, 3, 5)
    with pytest.raises(ConfigError, match="token grid"):
        repa_loss(torch.zeros(2, 4, 5), torch.zeros(2, 9, 5))


def test_the_alignment_gradient_reaches_blocks_up_to_k_and_the_projector_only(cache):
    config, latents, _ = cache
    from vavae_lab.latents.dataset import LatentDataset

    data = LatentDataset(latents)
    torch.manual_seed(0)
    model = build_dit_for(config, data.latent_shape, data.num_classes)
    assert len(model.blocks) >= 2
    for block in model.blocks:  # adaLN-zero leaves every block the identity at init; wake them up
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    repa = Repa(hidden_size=model.config["hidden_size"], feature_dim=6, depth=1, weight=1.0, projector_dim=8)
    x, y = data.get_batch(torch.arange(4))
    _, hidden = model(x, torch.rand(4), y, hidden_block=1)
    tokens = hidden.shape[1]
    repa_loss(repa.projector(hidden), torch.randn(4, tokens, 6)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in repa.projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks[0].parameters())
    for later in (*model.blocks[1:], model.final_layer):
        assert all(p.grad is None for p in later.parameters())


def test_lambda_zero_trains_the_same_dit_bit_for_bit(cache):
    config, latents, feats = cache
    from vavae_lab.latents.dataset import LatentDataset

    def run(repa_weight):
        data = LatentDataset(latents)
        torch.manual_seed(0)
        model = build_dit_for(config, data.latent_shape, data.num_classes)
        repa = None if repa_weight is None else Repa(hidden_size=model.config["hidden_size"], feature_dim=FeatureCache(
            feats).dim, depth=1, weight=repa_weight, projector_dim=16)
        trained, _ = fit_dit(model, build_transport("rectified_flow"), data, config.dit.train, ema_decay=0.9, seed=0,
                             repa=repa, features=None if repa is None else FeatureCache(feats))
        return trained.state_dict()

    plain, zero, half = run(None), run(0.0), run(0.5)
    for k, v in plain.items():
        assert torch.equal(v, zero[k]), k
    assert any(not torch.equal(v, half[k]) for k, v in plain.items())


def test_repa_run_resumes_exactly_and_samples_without_the_projector(cache, tmp_path):
    config, latents, feats = cache
    straight, history = train_dit(config, latents, tmp_path / "a", features_dir=feats)
    assert all("repa" in r for r in history["train"])
    train_dit(config, latents, tmp_path / "b", features_dir=feats)
    (tmp_path / "b" / "checkpoints" / "step_00000006.pt").unlink()
    (tmp_path / "b" / "dit.pt").unlink()
    resumed, _ = train_dit(config, latents, tmp_path / "b", resume=True, features_dir=feats)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    loaded, _ = load_dit(tmp_path / "a")  # dit.pt holds the DiT alone: no projector, loads strictly
    assert not any("projector" in k for k in loaded.state_dict())
    latent = torch.randn(2, loaded.in_channels, loaded.input_size, loaded.input_size)
    out = loaded(latent, torch.full((2,), 0.5), torch.tensor([0, 1]))
    assert torch.is_tensor(out) and out.shape == latent.shape


def test_repa_needs_its_features_and_a_block_that_exists(cache):
    config, latents, feats = cache
    with pytest.raises(ConfigError, match="features_dir"):
        train_dit(config, latents)
    with pytest.raises(ConfigError, match="dit.repa.depth"):
        train_dit(apply_overrides(config, ["dit.repa.depth=9"]), latents, features_dir=feats)
    with pytest.raises(ConfigError, match="dit.repa.weight"):
        apply_overrides(config, ["dit.repa.weight=-1"])


def test_feature_cache_items_follow_the_latents_order_and_flips(cache):
    config, _, feats = cache
    from vavae_lab.build import build_repa_vfm, train_dataset
    from vavae_lab.latents.features import image_features

    cache_ = FeatureCache(feats)
    images, _ = train_dataset(config.data).get_batch(torch.tensor([5, 2]))
    vfm = build_repa_vfm(config, torch.device("cpu"))
    n = cache_.num_images
    got = cache_.get_batch(torch.tensor([5, n + 2, 2, n + 5]))
    want = torch.cat([image_features(vfm, images[:1]), image_features(vfm, images[1:].flip(-1)),
                      image_features(vfm, images[1:]), image_features(vfm, images[:1].flip(-1))])
    assert torch.allclose(got, want, atol=2e-3, rtol=2e-3)  # stored in half precision


def test_repa_off_keeps_every_dit_key_and_on_changes_it():
    for name in [n for n in PRESETS if get_preset(n).dit.repa.weight == 0]:
        config = get_preset(name)
        moved = apply_overrides(config, ["dit.repa.depth=3", "dit.repa.projector_dim=7"])  # weight 0: still off
        assert stage_key(moved, "dit") == stage_key(config, "dit"), name
    config = get_preset("lab")
    on = apply_overrides(config, ["dit.repa.weight=0.5", "dit.repa.foundation=toy", "dit.repa.depth=2"])
    assert stage_key(on, "dit") != stage_key(config, "dit")
    assert stage_key(on, "latents") == stage_key(config, "latents")  # the same latents under both runs


@pytest.mark.parametrize("name", ["imagenet256_lightningdit_xl_64ep_repa", "imagenet256_lightningdit_xl_800ep_repa",
                                  "imagenet256_f16d32_repa"])
def test_imagenet_repa_presets_add_the_published_alignment_and_change_nothing_else(name):
    from vavae_lab.build import token_grid

    config, base = get_preset(name), get_preset(name.removesuffix("_repa"))
    r = config.dit.repa
    # sihyun-yu/REPA README: --enc-type=dinov2-vit-b --proj-coeff=0.5 --encoder-depth=8; models/sit.py projector_dim
    assert (r.foundation, r.weight, r.depth, r.projector_dim) == ("dinov2_vitb14", 0.5, 8, 2048)
    assert token_grid(config) == 16  # DINOv2-B/14 at 224 px: 16 x 16 patches, the f16 DiT's 16 x 16 tokens
    config.dit.repa, config.name = base.dit.repa, base.name
    assert config == base
    assert stage_key(get_preset(name), "latents") == stage_key(base, "latents")


def test_cli_extracts_features_then_trains_a_repa_dit(tmp_path, capsys):
    from vavae_lab.cli import main

    tiny = ["data.num_train=64", "data.num_test=16", "latents.shard_size=64", "latents.stats_count=64",
            "tokenizer.train.steps=2", "tokenizer.train.batch_size=8", "tokenizer.train.eval_images=16",
            "tokenizer.vf.toy.steps=2", "tokenizer.vf.toy.num_images=64", "dit.train.steps=2",
            "dit.train.batch_size=8", "dit.repa.weight=0.5", "dit.repa.depth=1", "dit.repa.projector_dim=8",
            "dit.repa.foundation=toy_random"]
    assert main(["train-tokenizer", "--preset", "smoke", "--out", str(tmp_path / "tok"), *tiny]) == 0
    assert main(["extract-latents", "--preset", "smoke", "--tokenizer", str(tmp_path / "tok"),
                 "--out", str(tmp_path / "lat"), *tiny]) == 0
    assert main(["extract-features", "--preset", "smoke", "--out", str(tmp_path / "feat"), *tiny]) == 0
    assert main(["train-dit", "--preset", "smoke", "--latents", str(tmp_path / "lat"), "--features",
                 str(tmp_path / "feat"), "--out", str(tmp_path / "dit"), *tiny]) == 0
    assert "repa" in (tmp_path / "dit" / "metrics.jsonl").read_text()
    assert main(["train-dit", "--preset", "smoke", "--latents", str(tmp_path / "lat"), "--features",
                 str(tmp_path / "nothing"), "--out", str(tmp_path / "dit2"), *tiny, "dit.repa.depth=5"]) != 0
    assert "dit.repa.depth=5" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # refused before any work
    off = [t for t in tiny if not t.startswith("dit.repa.weight")]
    assert main(["train-dit", "--preset", "smoke", "--latents", str(tmp_path / "lat"), "--features",
                 str(tmp_path / "feat"), "--out", str(tmp_path / "dit3"), *off]) != 0
    assert "REPA is off (dit.repa.weight=0)" in capsys.readouterr().err and not (tmp_path / "dit3").exists()


def test_launch_passes_the_feature_cache_to_train_dit(tmp_path):
    import vavae_lab

    run = vavae_lab.launch("train-dit", "imagenet256_lightningdit_xl_64ep_repa", gpus=8, latents=str(tmp_path / "l"),
                           features=str(tmp_path / "f"), run_dir=tmp_path / "run", dry_run=True)
    assert f"--features {tmp_path / 'f'}" in run.shell_command()


def _arm(name, gfids, spread=0.5):
    return {"tokenizer": name, "gfid_seeds": gfids, "gfid_spread": spread, "gfid_cfg_seeds": gfids,
            "gfid_cfg_spread": spread}


def test_the_2x2_verdicts_ask_each_question_in_the_right_direction():
    from vavae_lab.study.repa import repa_claims

    plain, repa, vf, both = (_arm("plain", [10.0, 11.0]), _arm("REPA", [6.0, 7.0]), _arm("VF", [8.0, 9.0]),
                             _arm("both", [8.2, 9.1]))
    verdicts = {v["claim"]: v["verdict"] for v in repa_claims([plain, repa, vf, both])}
    assert verdicts["REPA helps the plain tokenizer: plain -> REPA"] == "shown"
    assert verdicts["VA-VAE helps it: plain -> VF"] == "shown"
    assert verdicts["REPA beats VA-VAE: VF -> REPA"] == "shown"
    assert verdicts["they stack: better than VA-VAE alone: VF -> both"].startswith("reversed") is False
    assert verdicts["they stack: better than REPA alone: REPA -> both"] == "reversed"
    assert len(verdicts) == 8 and sum(k.endswith("(CFG 3)") for k in verdicts) == 3


def test_the_repa_tables_run_end_to_end_on_the_smoke_preset(tmp_path, monkeypatch):
    from vavae_lab.study.report import reproduce
    from vavae_lab.study.runner import Study

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    report = reproduce("smoke", tmp_path / "out", tables=["repa", "repa_depth"], seeds=(0,), progress=False)
    import json

    results = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["tokenizer"] for r in results["repa"]] == ["f4d32", "f4d32 + REPA", "f4d32 + VF", "f4d32 + VF + REPA"]
    assert len(results["repa_verdicts"]) == 8 and all(v["verdict"] for v in results["repa_verdicts"])
    blocks = len(build_dit_for(get_preset("smoke"), (32, 8, 8), 10).blocks)
    assert [r["block"] for r in results["repa_depth"]] == ["none", *range(1, blocks + 1)]
    assert "## REPA beside VA-VAE: the 2 x 2 (notebook 07)" in report.read_text()
    study = Study("smoke", progress=False)
    assert study.dit_key(study.config("d32", *study.repa())) != study.dit_key(study.config("d32"))
    model, _ = study.dit("d32", *study.repa())
    assert not any("projector" in k for k in model.state_dict())


def test_the_curves_train_each_repa_dit_once_with_its_snapshots_before_scoring_it():
    from vavae_lab.study import variants as V
    from vavae_lab.study.jobs import jobs

    found = jobs(family="toy-S", tables=["repa", "repa_curves", "repa_depth"], ladder=V.LADDERS[8])
    calls = [c for _, job in found for c in job]
    repa = V.repa_overrides("toy-S/1")
    runs = V.seed_runs(V.SEEDS, tokenizer_seeds=True)
    for name in V.repa_tokenizers(V.LADDERS[8]):
        for run in runs:
            first = [i for i, c in enumerate(calls) if c[1] == name and tuple(c[2][-len(run):] if run else ()) == run
                     and c[2][:len(repa)] == repa]
            assert calls[first[0]][0] == "convergence"  # trains it with the snapshots, then scores the finished DiT
        assert sum(c[0] == "convergence" and c[1] == name for c in calls) == 2 * len(runs)  # both arms, every run
    assert [c[2] for c in calls if c[0] == "generation" and "dit.repa.depth=2" in " ".join(c[2])] == [
        V.repa_overrides("toy-S/1", 2)]
    assert V.repa_overrides("toy-S/1") == ("dit.repa.weight=0.5", "dit.repa.depth=1", "dit.repa.projector_dim=192",
                                           "dit.repa.foundation=toy")
    assert V.repa_overrides("XL/1")[1:3] == ("dit.repa.depth=8", "dit.repa.projector_dim=2304")
    assert len(calls) == len(set(calls))


def test_a_missing_vfm_names_the_repa_fields_to_fix(monkeypatch):
    from vavae_lab.build import build_repa_vfm
    from vavae_lab.errors import WeightsUnavailableError

    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    config = get_preset("imagenet256_lightningdit_xl_64ep_repa")
    with pytest.raises(WeightsUnavailableError, match=r"dit\.repa\.pretrained_path=.*dit\.repa\.foundation=toy"):
        build_repa_vfm(config, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"dit\.repa\.foundation='dinov_vitb' is an unknown foundation model"):
        build_repa_vfm(apply_overrides(config, ["dit.repa.foundation=dinov_vitb"]), torch.device("cpu"))
