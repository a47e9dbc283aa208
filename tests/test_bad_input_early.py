"""Mistakes that used to cost work or data: each is one `error:` line before anything is trained, scored or
replaced (a wrong pack cache, a switch typed wrong, a size or device typo, an output path of the wrong kind)."""
import json

import pytest

from vavae_lab import pack
from vavae_lab.cli import main
from vavae_lab.config import load_config
from vavae_lab.errors import ConfigError
from vavae_lab.paths import env_switch


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and err.count("\n") == 0, err
    return err


def _fake_pack(root):
    root.mkdir()
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "x.json").write_text("{}")
    (root / "manifest.json").write_text(json.dumps({"format": 1, "artifacts": {"tokenizer/x": {"preset": "lab"}}}))
    return (root / "manifest.json").read_text()


def test_pack_with_a_wrong_preset_or_an_empty_cache_leaves_the_old_pack_as_it_is(tmp_path, capsys):
    manifest = _fake_pack(tmp_path / "pack")
    cache = tmp_path / "cache"
    (cache / "tokenizers").mkdir(parents=True)
    assert main(["pack", "--cache", str(cache), "--preset", "lb", "--out", str(tmp_path / "pack")]) == 2
    assert "lb" in _one_line(capsys)
    assert main(["pack", "--cache", str(cache), "--preset", "lab", "--out", str(tmp_path / "pack")]) == 2
    err = _one_line(capsys)
    assert "no finished lab run" in err and "left as it is" in err and "--cache" in err
    assert (tmp_path / "pack" / "manifest.json").read_text() == manifest  # nothing replaced, nothing left behind
    assert not (tmp_path / "pack.building").exists()
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["pack", "--cache", str(cache), "--preset", "lab", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "--out" in _one_line(capsys) and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("off", False), ("No", False), ("1", True),
                                       ("on", True), ("TRUE", True)])
def test_a_switch_reads_on_and_off_words(monkeypatch, value, on):
    monkeypatch.setenv(pack.RETRAIN_ENV, value)
    assert pack.retraining() is on


def test_a_switch_typed_wrong_is_one_line_not_a_guess(monkeypatch):
    monkeypatch.setenv(pack.RETRAIN_ENV, "maybe")
    with pytest.raises(ConfigError, match="VAVAE_LAB_RETRAIN='maybe' is neither on"):
        pack.retraining()
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "yes please")
    with pytest.raises(ConfigError, match="VAVAE_LAB_OFFLINE"):
        env_switch("VAVAE_LAB_OFFLINE")


def test_a_pack_variable_naming_no_folder_is_a_mistake_not_an_empty_pack(monkeypatch, tmp_path):
    monkeypatch.setenv(pack.PACK_ENV, str(tmp_path / "pak"))
    with pytest.raises(ConfigError, match="VAVAE_LAB_PACK=.*pak is not a folder"):
        pack.read_manifest()
    (tmp_path / "pak").mkdir()
    assert pack.read_manifest()["artifacts"] == {}  # an empty folder is an empty pack: everything trains


def test_a_data_folder_that_is_a_file_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "notes.txt"))
    assert main(["reproduce", "--preset", "lab", "--plan"]) == 2
    assert "VAVAE_LAB_DATA" in _one_line(capsys)


def test_an_unknown_dit_size_or_device_is_refused_when_the_config_loads(capsys):
    with pytest.raises(ConfigError, match="dit.model.size='toy-XXL/1' is out of range.*toy-M/1"):
        load_config("lab", ["dit.model.size=toy-XXL/1"])
    with pytest.raises(ConfigError, match="device='cdua'"):
        load_config("lab", ["device=cdua"])
    assert load_config("lab", ["device=cuda:1"]).device == "cuda:1"  # available or not is asked when it is used
    assert main(["reproduce", "--preset", "lab", "--plan", "dit.model.size=toy-S/3"]) == 2
    assert "dit.model.size" in _one_line(capsys)


def test_a_study_or_reproduce_on_a_device_typo_stops_before_any_work(tmp_path, capsys):
    from vavae_lab.study import Study

    with pytest.raises(ConfigError, match="cdua"):
        Study("lab", device="cdua", progress=False)
    assert main(["reproduce", "--preset", "smoke", "--device", "cdua", "--out", str(tmp_path / "r")]) == 2
    assert "cdua" in _one_line(capsys) and not (tmp_path / "r").exists()


def test_an_output_path_of_the_wrong_kind_is_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "--out" in _one_line(capsys)
    assert main(["train-tokenizer", "--preset", "smoke", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "--out" in _one_line(capsys)
    assert main(["evaluate", "--samples", str(tmp_path / "folder"), "--preset", "smoke", "--out",
                 str(tmp_path / "folder")]) == 2
    assert "--out" in _one_line(capsys)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_evaluate_checkpoints_refuses_tokenizer_without_dit_instead_of_training(tmp_path, capsys):
    assert main(["evaluate-checkpoints", "--preset", "smoke", "--tokenizer", str(tmp_path / "tok")]) == 2
    assert "--tokenizer goes with --dit" in _one_line(capsys)


def test_list_overrides_read_alike_in_both_forms_and_a_broken_one_is_one_line(capsys):
    shell, yaml_list = (load_config("lab", [f"dit.snapshots={v}"]).dit.snapshots for v in ("15,30", "[15, 30]"))
    assert shell == yaml_list == (15, 30)
    for bad, said in (("tokenizer.model.ch_mult=[1,2", "is not a value"), ("=1", "must look like key.sub=value")):
        assert main(["show-config", "--preset", "lab", bad]) == 2
        assert said in _one_line(capsys)
    with pytest.raises(ConfigError, match="a list of key.sub=value strings"):
        load_config("lab", "seed=1")


def test_a_folder_or_a_non_mapping_as_config_is_one_line(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for config, said in ((tmp_path, "config.yaml"), (tmp_path / "list.yaml", "holds a list, not a config")):
        assert main(["show-config", "--config", str(config)]) == 2
        assert said in _one_line(capsys)
    with pytest.raises(ConfigError, match="neither a preset nor a YAML file"):
        load_config("")


def test_a_missing_run_folder_is_named_as_the_mistake(tmp_path, capsys):
    assert main(["train-tokenizer", "--out", str(tmp_path / "nope"), "--resume"]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in _one_line(capsys)


def test_argparse_mistakes_are_one_line_with_the_closest_command_or_flag(capsys):
    def rc(argv):
        try:
            return main(argv)
        except SystemExit as exc:  # argparse exits before main's try
            return exc.code

    for argv, said in ((["trian-tokenizer"], "did you mean train-tokenizer?"),
                       (["show-config", "--preest", "lab"], "did you mean --preset?"),
                       (["reproduce", "--preset", "lab", "--dit.seed=1"], "written without dashes: dit.seed=1"),
                       (["reproduce", "--preset", "lab", "--jobs", "0", "--plan"],
                        "--jobs: expects a whole number >= 1"),
                       (["uniformity", "x", "--max-iter", "10"], "--max-iter: expects a whole number >= 250"),
                       (["reproduce", "lab", "--plan"], "a preset goes after --preset: --preset lab")):
        assert rc(argv) == 2
        assert said in _one_line(capsys), argv


def test_a_pickle_of_python_objects_is_named_without_torchs_advice_to_unpickle_it(tmp_path):
    import fractions

    import torch

    from vavae_lab.checkpoint import load_checkpoint
    from vavae_lab.errors import CheckpointError

    torch.save({"y": fractions.Fraction(1, 3)}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "unsafe.pt")
    assert "reads safely" in str(caught.value) and "weights_only" not in str(caught.value)


def test_uniformity_on_a_run_folder_says_to_extract_its_latents_first(tmp_path, capsys):
    (tmp_path / "tokenizer.pt").write_text("x")
    assert main(["uniformity", str(tmp_path)]) == 2
    err = _one_line(capsys)
    assert "training run, not a latent cache" in err and f"--tokenizer {tmp_path}" in err
