"""The pretrained pack: built from a study cache, restored by key instead of training, hash-checked, never stale."""
import copy
import json
import shutil

import pytest
import torch

from vavae_lab import cli, pack, pipeline
from vavae_lab.config import load_config
from vavae_lab.errors import ConfigError
from vavae_lab.keys import stage_key
from vavae_lab.runs import load_dit, load_tokenizer
from vavae_lab.study import Study
from vavae_lab.study.packing import build_pack, stale_entries, weights_filter

TINY = ("data.num_train=128", "data.num_test=64", "tokenizer.train.steps=4", "tokenizer.train.batch_size=8",
        "tokenizer.train.eval_images=32", "tokenizer.train.ckpt_every=4", "dit.train.steps=4",
        "dit.train.batch_size=16", "dit.train.ckpt_every=4", "sample.num_samples=32", "metrics.toy.feature_dim=2", "sample.batch_size=32",
        "sample.steps=2", "metrics.num_images=32", "latents.shard_size=128", "latents.stats_count=128")
ENTRY_FIELDS = {"stage", "key", "preset", "overrides", "files", "command", "commit", "machine", "date", "wall_s"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A smoke study (one tokenizer, its DiT, one gFID) trained in a temp cache and packed."""
    tmp = tmp_path_factory.mktemp("pack")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(tmp / "trained"))
        (tmp / "no_pack").mkdir()  # an empty pack: everything trains
        mp.setenv(pack.PACK_ENV, str(tmp / "no_pack"))
        study = Study("smoke", TINY, progress=False)
        result = study.generation("d4")
        config = study.config("d4")
        cache = tmp / "trained" / "cache" / "study"
        manifest = build_pack(cache, command="pytest tests/test_pack.py", preset="smoke", root=tmp / "pack")
    return {"tmp": tmp, "root": tmp / "pack", "cache": cache, "manifest": manifest, "result": result,
            "config": config}


def _fresh(monkeypatch, packed, name="fresh"):
    """Point the cache at an empty folder and the pack at the built one."""
    monkeypatch.setenv("VAVAE_LAB_DATA", str(packed["tmp"] / name))
    monkeypatch.setenv(pack.PACK_ENV, str(packed["root"]))
    monkeypatch.delenv(pack.RETRAIN_ENV, raising=False)


def _no_training(monkeypatch):
    """Make any training call fail the test."""
    import vavae_lab.train.dit as train_dit
    import vavae_lab.train.tokenizer as train_tok

    monkeypatch.setattr(train_tok, "train_tokenizer", lambda *a, **k: pytest.fail("a packed tokenizer was trained"))
    monkeypatch.setattr(train_dit, "train_dit", lambda *a, **k: pytest.fail("a packed DiT was trained"))


@pytest.mark.slow
def test_manifest_records_every_artifact_with_its_provenance(packed):
    config, arts = packed["config"], packed["manifest"]["artifacts"]
    keys = {f"tokenizer/{stage_key(config, 'tokenizer')}", f"dit/{stage_key(config, 'dit')}",
            f"generation/{stage_key(config, 'generation', n=config.sample.num_samples)}"}
    assert keys <= set(arts)
    for entry in arts.values():
        assert ENTRY_FIELDS <= set(entry) and entry["preset"] == "smoke" and entry["command"].startswith("pytest")
        for name, rec in entry["files"].items():
            assert pack.sha256_file(packed["root"] / name) == rec["sha256"]
    assert arts[next(k for k in keys if k.startswith("dit/"))]["dtype"] == "float16"
    f = 2 ** (len(config.tokenizer.model.ch_mult) - 1)
    d = config.tokenizer.model.embed_dim
    assert {arts[k]["latent"] for k in keys} == {f"f{f}d{d} ({3 * f * f / d:g}x)"}   # the manifest names the ladder
    assert stale_entries(packed["root"]) == []
    assert json.loads((packed["root"] / pack.MANIFEST).read_text()) == packed["manifest"]


@pytest.mark.slow
def test_a_fresh_cache_loads_the_pack_instead_of_training(packed, monkeypatch, capsys):
    _fresh(monkeypatch, packed)
    _no_training(monkeypatch)
    study = Study("smoke", TINY, progress=False)
    assert study.generation("d4") == packed["result"]
    tokenizer, _ = study.tokenizer("d4")
    original = load_tokenizer(packed["cache"] / "tokenizers" / stage_key(packed["config"], "tokenizer"))
    assert all(torch.equal(a, b) for a, b in zip(tokenizer.state_dict().values(), original.state_dict().values()))
    dit, history = study.dit("d4")  # fp16 in the pack, fp32 again after loading
    trained, _ = load_dit(packed["cache"] / "dits" / stage_key(packed["config"], "dit"))
    for a, b in zip(dit.state_dict().values(), trained.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert history["train"] and "pack: tokenizer" in capsys.readouterr().out
    images, _ = study.samples("d4", n=4)  # the restored DiT passes the tokenizer check and samples
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8


@pytest.mark.slow
def test_retrain_ignores_the_pack(packed, monkeypatch, capsys):
    _fresh(monkeypatch, packed, "retrain")
    monkeypatch.setenv(pack.RETRAIN_ENV, "1")
    config = Study("smoke", TINY, progress=False).config("d4")
    assert not pack.restore("tokenizer", stage_key(config, "tokenizer"), packed["tmp"] / "x")
    calls = []
    import vavae_lab.train.tokenizer as train_tok

    def record(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("stop here")

    monkeypatch.setattr(train_tok, "train_tokenizer", record)
    with pytest.raises(RuntimeError, match="stop here"):
        pipeline.tokenizer(config)
    assert calls and f"{pack.RETRAIN_ENV} is set" in capsys.readouterr().out


@pytest.mark.slow
def test_a_corrupt_pack_file_is_one_line_naming_the_file_and_the_fix(packed, monkeypatch, tmp_path):

    root = tmp_path / "pack"
    shutil.copytree(packed["root"], root)
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv(pack.PACK_ENV, str(root))
    name = next(n for n in (root / "tokenizer").iterdir() if n.suffix == ".safetensors")
    data = bytearray(name.read_bytes())
    data[len(data) // 2] ^= 0xFF
    name.write_bytes(bytes(data))
    with pytest.raises(pack.PackError) as err:
        pipeline.tokenizer(packed["config"])
    message = str(err.value)
    assert "\n" not in message and name.name in message and "sha256" in message and pack.RETRAIN_ENV in message
    (root / pack.MANIFEST).write_text("{not json")
    with pytest.raises(pack.PackError, match="not a pack manifest"):
        pack.read_manifest(root)


@pytest.mark.slow
def test_an_entry_whose_preset_changed_is_stale(packed, monkeypatch, tmp_path):

    from vavae_lab import presets

    root = tmp_path / "pack"
    shutil.copytree(packed["root"], root)
    smoke = presets.PRESETS["smoke"]

    def changed():
        config = smoke()
        config.tokenizer.train.lr = 1e-3  # a preset edit the pack was not regenerated for
        return config

    monkeypatch.setitem(presets.PRESETS, "smoke", changed)
    stale = stale_entries(root)
    assert any(s.startswith("tokenizer/") for s in stale) and any(s.startswith("dit/") for s in stale)


@pytest.mark.slow
def test_weights_except_packs_the_results_and_histories_of_those_runs_but_not_their_weights(packed, monkeypatch,
                                                                                            tmp_path):
    root = tmp_path / "results_only"
    arts = build_pack(packed["cache"], command="pytest", preset="smoke", root=root,
                      weights_except=["dit.train.steps=4"])["artifacts"]
    weights = [e for e in arts.values() if e["stage"] in ("tokenizer", "dit")]
    assert weights and not any(pack.has_weights(e) for e in weights) and all("dtype" not in e for e in weights)
    assert not list(root.rglob("*.safetensors")) and (root / "generation").is_dir()
    assert stale_entries(root) == []
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "fresh"))
    monkeypatch.setenv(pack.PACK_ENV, str(root))
    _no_training(monkeypatch)
    study = Study("smoke", TINY, progress=False)
    assert study.generation("d4")["fid"] == packed["result"]["fid"]
    trained = json.loads((packed["cache"] / "dits" / study.dit_key(packed["config"]) / "history.json").read_text())
    assert study.dit_history("d4") == trained  # the loss curves without the weights, nothing trained
    assert study.tokenizer_history("d4")["train"] and not (tmp_path / "fresh" / "cache" / "study" / "dits").exists()
    with pytest.raises(pytest.fail.Exception, match="was trained"):
        study.dit("d4")  # no weights in the pack: its tokenizer and DiT would be trained
    keep = weights_filter(["dit.train.steps=5"])
    assert keep(packed["config"])  # a value that differs keeps the weights
    assert cli.main(["pack", "--cache", str(packed["cache"]), "--preset", "smoke", "--out", str(tmp_path / "p"),
                     "--weights-except", "dit.model.size"]) == 2
    with pytest.raises(ConfigError, match="--weights-except dit.model.sise=toy-M/1"):
        weights_filter(["dit.model.sise=toy-M/1"], "smoke")  # a misspelt key would silently keep every weight


@pytest.mark.slow
def test_a_rebuilt_pack_keeps_the_entries_a_renamed_preset_still_keys(packed, monkeypatch, tmp_path, capsys):
    from vavae_lab import presets

    root = tmp_path / "pack"
    shutil.copytree(packed["root"], root)
    before = pack.read_manifest(root)["artifacts"]
    smoke = presets.PRESETS["smoke"]

    def renamed():  # what smoke was when the pack was built, under a new name
        config = smoke()
        config.name = "smoke_classic"
        return config

    def changed():  # smoke itself moves on
        config = smoke()
        config.tokenizer.train.lr = 1e-3
        return config

    monkeypatch.setitem(presets.PRESETS, "smoke_classic", renamed)
    monkeypatch.setitem(presets.PRESETS, "smoke", changed)
    empty = tmp_path / "cache"
    (empty / "tokenizers").mkdir(parents=True)
    with pytest.raises(ConfigError, match="nothing is kept, so the pack .* is left as it is"):
        build_pack(empty, command="pytest", preset="smoke", root=root, keep_presets=["smoke"])  # smoke keys changed
    assert pack.read_manifest(root)["artifacts"] == before
    shutil.rmtree(root)
    shutil.copytree(packed["root"], root)
    assert cli.main(["pack", "--cache", str(empty), "--preset", "smoke", "--out", str(root),
                     "--keep-presets", "smoke_classic"]) == 0
    assert f"packed 0 smoke artifacts (and kept {len(before)} of smoke_classic)" in capsys.readouterr().out
    after = pack.read_manifest(root)["artifacts"]
    assert set(after) == set(before) and not (tmp_path / "pack.building").exists()
    for name, entry in after.items():
        assert entry["preset"] == "smoke_classic" and entry["preset_at_build"] == "smoke"
        assert {k: v for k, v in entry.items() if k not in ("preset", "preset_at_build")} == \
            {k: v for k, v in before[name].items() if k != "preset"}
        for file, rec in entry["files"].items():
            assert pack.sha256_file(root / file) == rec["sha256"]
    assert stale_entries(root) == []
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "fresh"))
    monkeypatch.setenv(pack.PACK_ENV, str(root))
    _no_training(monkeypatch)
    config = copy.deepcopy(packed["config"])
    config.name = "smoke_classic"
    assert pipeline.generation(config) == packed["result"]
    assert "when smoke_classic was called smoke" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="'smoke_clasic' is neither a preset"):
        build_pack(empty, command="pytest", preset="smoke", root=root, keep_presets=["smoke_clasic"])
    assert pack.read_manifest(root)["artifacts"] == after  # a typo loses nothing


@pytest.mark.slow
def test_weights_except_drops_the_weights_of_kept_runs_and_keeps_the_rest_byte_for_byte(packed, tmp_path):
    """A study no notebook samples any more shrinks to its numbers and curves: its kept runs lose only weights."""
    root = tmp_path / "pack"
    shutil.copytree(packed["root"], root)
    before = pack.read_manifest(root)["artifacts"]
    empty = tmp_path / "cache"
    (empty / "tokenizers").mkdir(parents=True)
    after = build_pack(empty, command="pytest", preset="smoke", root=root, keep_presets=["smoke"],
                       weights_except=["dit.train.steps=4"])["artifacts"]
    assert set(after) == set(before)
    for name, entry in after.items():
        old = before[name]
        if entry["stage"] in ("tokenizer", "dit"):  # TINY sets dit.train.steps=4 on every run
            assert pack.has_weights(old) and not pack.has_weights(entry) and "dtype" not in entry
            assert entry["files"] == {f: r for f, r in old["files"].items() if not f.endswith(".safetensors")}
            assert {k: v for k, v in entry.items() if k not in ("files", "dtype")} == \
                {k: v for k, v in old.items() if k not in ("files", "dtype")}
        else:
            assert entry == old
        for file, rec in entry["files"].items():
            assert pack.sha256_file(root / file) == rec["sha256"]
    assert not list(root.rglob("*.safetensors")) and stale_entries(root) == []


def test_weights_except_compares_values_as_the_config_stores_them():
    keep = weights_filter(["dit.train.lr=2e-3"], "smoke")
    assert not keep(load_config("smoke", ["dit.train.lr=0.002"]))  # the same number written another way
    assert keep(load_config("smoke", ["dit.train.lr=0.003"])) and keep(load_config("smoke"))
    default = load_config("smoke").dit.model.size
    with pytest.raises(ConfigError, match=f"dit.model.size={default}: that is the smoke preset's own value"):
        weights_filter([f"dit.model.size={default}"], "smoke")  # no run overrides it: would match nothing


def test_pack_command_refuses_a_folder_that_is_not_a_study_cache(tmp_path, capsys):
    assert cli.main(["pack", "--cache", str(tmp_path), "--preset", "lab", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cache" in err and "data/cache/study" in err


def test_shipped_pack_matches_the_current_configs_and_its_hashes():
    """The pack in data/pack (if any) was trained by today's configs: no stale key, no edited file, <= 40 MB."""
    root = pack.pack_dir()
    assert stale_entries(root) == [], "the shipped pack is stale: regenerate it (docs/cli.md, 'The pretrained pack')"
    for entry in pack.read_manifest(root)["artifacts"].values():
        for name, rec in entry["files"].items():
            assert pack.sha256_file(root / name) == rec["sha256"], f"{name} differs from its manifest"
    assert pack.pack_size(root) <= 40 * 2**20


@pytest.mark.slow
def test_run_metadata_is_gzipped_the_same_each_build_and_plain_json_still_reads(packed, tmp_path):
    """A tokenizer's or DiT's config and history go in as <key>.json.gz, packed to the same bytes twice; an entry
    carried over from an older pack with a plain <key>.json reads the same."""
    import gzip

    arts = packed["manifest"]["artifacts"]
    name = next(k for k in arts if k.startswith("dit/"))
    meta_file = next(f for f in arts[name]["files"] if f.endswith(".json.gz"))
    again = build_pack(packed["cache"], command="pytest tests/test_pack.py", preset="smoke", root=tmp_path / "again")
    assert again["artifacts"][name]["files"][meta_file]["sha256"] == arts[name]["files"][meta_file]["sha256"]
    history = pack.packed_history("dit", arts[name]["key"], root=packed["root"])
    old = tmp_path / "old"
    shutil.copytree(packed["root"], old)
    plain = meta_file[: -len(".gz")]
    (old / plain).write_bytes(gzip.decompress((old / meta_file).read_bytes()))
    (old / meta_file).unlink()
    manifest = json.loads((old / pack.MANIFEST).read_text())
    files = manifest["artifacts"][name]["files"]
    files[plain] = {"sha256": pack.sha256_file(old / plain), "bytes": (old / plain).stat().st_size}
    del files[meta_file]
    (old / pack.MANIFEST).write_text(json.dumps(manifest))
    assert pack.packed_history("dit", arts[name]["key"], root=old) == history and history["train"]
    assert pack.restore("dit", arts[name]["key"], tmp_path / "restored", root=old, quiet=True)


@pytest.mark.slow
def test_repacking_the_same_cache_keeps_who_made_each_artifact(packed, tmp_path):
    """A cache that still holds packed artifacts repacks them to the same bytes, so their entries keep the command,
    commit and date that made them; an artifact whose bytes changed is the new command's."""
    root = tmp_path / "pack"
    shutil.copytree(packed["root"], root)
    before = pack.read_manifest(root)["artifacts"]
    after = build_pack(packed["cache"], command="a later stage", preset="smoke", root=root,
                       keep_presets=["smoke"])["artifacts"]
    assert after == before
    gen = next(k for k in before if k.startswith("generation/"))
    result = packed["cache"] / "results" / f"{before[gen]['key']}.json"
    saved = result.read_bytes()
    try:
        result.write_text(json.dumps({**json.loads(saved), "gfid": 1.0}))
        again = build_pack(packed["cache"], command="a later stage", preset="smoke", root=root,
                           keep_presets=["smoke"])["artifacts"]
    finally:
        result.write_bytes(saved)
    assert again[gen]["command"] == "a later stage" and again[gen]["files"] != before[gen]["files"]
    assert all(again[k] == before[k] for k in before if k != gen)


@pytest.mark.slow
def test_histories_only_packs_curves_without_weights_and_keeps_packed_runs(packed, tmp_path, capsys):
    """A stage still training persists its runs' configs and histories, no weights; runs already packed keep theirs."""
    root = tmp_path / "pack"
    fresh = build_pack(packed["cache"], command="a stage in progress", preset="smoke", root=root,
                       histories_only=True)["artifacts"]
    runs = {k: e for k, e in fresh.items() if e["stage"] in ("tokenizer", "dit")}
    assert runs and not any(pack.has_weights(e) for e in runs.values()) and not list(root.rglob("*.safetensors"))
    for name, entry in runs.items():
        assert pack.packed_history(entry["stage"], entry["key"], root=root) is not None
    shutil.rmtree(root)
    shutil.copytree(packed["root"], root)
    before = pack.read_manifest(root)["artifacts"]
    assert cli.main(["pack", "--cache", str(packed["cache"]), "--preset", "smoke", "--out", str(root),
                     "--keep-presets", "smoke", "--histories-only", "--command", "later"]) == 0
    assert pack.read_manifest(root)["artifacts"] == before  # every packed run keeps its weights and its entry


def test_a_notebook_cell_says_its_restored_artifacts_in_one_line(monkeypatch, capsys, tmp_path):
    """In IPython only the first restore of a pack prints in full; the rest are counted and said at the cell's end."""
    import IPython

    hooks = []
    shell = type("Shell", (), {"events": type("Events", (), {"register": lambda self, event, f: hooks.append(
        (event, f))})()})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr(pack, "_TOLD", set())
    monkeypatch.setattr(pack, "_HOOKED", set())
    entry = {"wall_s": 60.0, "command": "python -m vavae_lab reproduce", "machine": "2 CPU cores"}
    for stage in ("generation", "generation", "dit"):
        pack._say_loaded(stage, "abc", tmp_path, entry)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "made by `python -m vavae_lab reproduce`" in out[0]  # the first, in full
    assert [event for event, _ in hooks] == ["post_execute"]                       # one hook per shell
    hooks[0][1]()
    assert capsys.readouterr().out.strip() == "pack: 2 more loaded (dit 1, generation 1); 2.0 min of training and " \
                                              "computing not redone"
    hooks[0][1]()
    assert capsys.readouterr().out == ""                                           # said once
