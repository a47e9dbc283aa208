"""Config presets, YAML round trips, overrides and the errors users see for bad keys and values."""
import pytest

from vavae_lab.config import Config, apply_overrides, from_dict, load_config, save_config, to_dict
from vavae_lab.errors import ConfigError
from vavae_lab.presets import PRESET_ENV, PRESETS, env_preset, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_yaml(name, tmp_path):
    config = get_preset(name)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert config.name == name


def test_override_nested_values_with_types():
    c = apply_overrides(get_preset("smoke"), ["tokenizer.model.embed_dim=8", "tokenizer.train.lr=1e-4",
                                              "tokenizer.vf.enabled=false", "tokenizer.model.ch_mult=[1,2]",
                                              "data.root=/tmp/x", "tokenizer.train.betas=[0.9, 0.95]"])
    assert c.tokenizer.model.embed_dim == 8
    assert c.tokenizer.train.lr == pytest.approx(1e-4) and isinstance(c.tokenizer.train.lr, float)
    assert c.tokenizer.vf.enabled is False
    assert c.tokenizer.model.ch_mult == (1, 2)
    assert c.data.root == "/tmp/x"
    assert c.tokenizer.train.betas == (0.9, 0.95)


def test_overrides_do_not_mutate_the_original():
    base = get_preset("smoke")
    apply_overrides(base, {"seed": 3})
    assert base.seed == 0


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"tokenizer\.model\.embd_dim.*did you mean tokenizer\.model\.embed_dim"):
        apply_overrides(get_preset("smoke"), ["tokenizer.model.embd_dim=8"])


def test_leaf_name_alone_suggests_full_paths():
    with pytest.raises(ConfigError, match=r"tokenizer\.train\.lr"):
        apply_overrides(get_preset("smoke"), ["lr=1"])


@pytest.mark.parametrize("override, message", [
    ("tokenizer.train.lr=abc", "expects a number"),
    ("tokenizer.train.steps=1.5", "expects an integer"),
    ("tokenizer.vf.enabled=maybe", "expects true or false"),
    ("tokenizer.train.betas=[0.9]", "expects 2 values"),
    ("tokenizer.model=3", "is a section"),
    ("seed", "key.sub=value"),
])
def test_wrong_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("smoke"), [override])


def test_yaml_with_unknown_key_is_rejected(tmp_path):
    data = to_dict(Config())
    data["tokenizer"]["vf"]["marign"] = 0.1
    with pytest.raises(ConfigError, match="tokenizer.vf.marign"):
        from_dict(data)


def test_unknown_preset_suggests_one():
    with pytest.raises(ConfigError, match="did you mean smoke"):
        load_config("smok")


def test_the_notebooks_preset_variable_is_read_and_checked(monkeypatch, tmp_path):
    """VAVAE_LAB_PRESET: unset or blank gives the default; a preset or a YAML file passes; a typo names the variable."""
    monkeypatch.delenv(PRESET_ENV, raising=False)
    assert env_preset() == "lab" and env_preset("smoke") == "smoke"
    monkeypatch.setenv(PRESET_ENV, "  ")
    assert env_preset() == "lab"
    monkeypatch.setenv(PRESET_ENV, " smoke ")
    assert env_preset() == "smoke"
    save_config(get_preset("smoke"), tmp_path / "mine.yaml")
    monkeypatch.setenv(PRESET_ENV, str(tmp_path / "mine.yaml"))
    assert load_config(env_preset()) == get_preset("smoke")
    monkeypatch.setenv(PRESET_ENV, "lba")
    with pytest.raises(ConfigError, match=r"^VAVAE_LAB_PRESET='lba' names no preset.*did you mean lab\?"):
        env_preset()


def test_imagenet_presets_follow_the_paper():
    c = get_preset("imagenet256_f16d32_vf")
    m, t, l, vf = c.tokenizer.model, c.tokenizer.train, c.tokenizer.loss, c.tokenizer.vf
    assert (m.ch, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.embed_dim) == (128, (1, 1, 2, 2, 4), 2, (16,), 32)
    assert (t.lr, t.betas, t.batch_size, t.precision) == (1e-4, (0.5, 0.9), 256, "fp32")
    # the last of the released VA-VAE's three stages (tests/test_presets_imagenet.py checks the chain)
    assert (l.kl_weight, l.disc_start, l.disc_weight, l.perceptual_weight) == (1e-6, 1, 0.5, 1.0)
    assert (vf.foundation, vf.m1, vf.m2, vf.weight, vf.enabled) == ("dinov2_vitl14", 0.5, 0.25, 0.1, True)
    assert t.steps == 15 * 1_281_167 // 256 and c.tokenizer.init_from == "imagenet256_f16d32_vf_stage2"
    assert get_preset("imagenet256_f16d64").tokenizer.vf.enabled is False
    assert get_preset("imagenet256_f16d16_vf").tokenizer.model.embed_dim == 16


def test_as_overrides_carries_one_section_of_a_preset_into_another():
    from vavae_lab.config import as_overrides

    lab, long = load_config("lab"), load_config("lab_long")
    mixed = load_config("lab_long", as_overrides(lab, "dit"))
    assert lab.dit != long.dit and mixed.dit == lab.dit
    assert mixed.tokenizer == long.tokenizer and mixed.sample == long.sample
    assert "dit.seed=null" in as_overrides(lab, "dit")
