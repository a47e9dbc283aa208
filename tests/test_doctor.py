"""`python -m vavae_lab doctor` reports versions, devices, presets, cache sizes, official weights and offline mode."""
from importlib import metadata

import torch

from vavae_lab.cli import main
from vavae_lab.doctor import FALLBACK_OFFICIAL_FILES, format_bytes, official_weights
from vavae_lab.presets import PRESETS


def _doctor(capsys) -> str:
    assert main(["doctor"]) == 0
    return capsys.readouterr().out


def test_versions_devices_and_presets(capsys):
    out = _doctor(capsys)
    assert f"torch          {torch.__version__.split('+')[0]}" in out
    assert f"torch-fidelity {metadata.version('torch-fidelity')}" in out
    for name in ("python", "torchvision", "timm", "scikit-learn", "ipywidgets"):
        assert f"  {name}" in out
    assert "cpu: " in out and "cores" in out
    assert ("cuda:0: " in out) == torch.cuda.is_available()
    for name in PRESETS:
        assert f"  {name}: " in out
    assert "smoke: shapes 32 px; tokenizer f4d16 (VF loss to toy, 60 steps)" in out
    assert "~1.1 min on a 2-core CPU" in out  # the measured smoke pipeline
    assert "imagenet256_f16d32_vf: imagefolder 256 px" in out and "meant for GPUs" in out


def test_cached_artifacts_with_sizes(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path))
    assert "cached artifacts:\n  none yet" in _doctor(capsys)
    (tmp_path / "cache" / "latents" / "abc").mkdir(parents=True)
    (tmp_path / "cache" / "latents" / "abc" / "shard_00000.safetensors").write_bytes(b"x" * 3072)
    (tmp_path / "cache" / "toy_vfm").mkdir()
    (tmp_path / "cache" / "toy_vfm" / "w.pt").write_bytes(b"x" * 100)
    out = _doctor(capsys)
    assert f"data folder: {tmp_path}" in out
    assert f"3.0 KiB  {tmp_path / 'cache' / 'latents'} (1 entries)" in out
    assert f"100 B  {tmp_path / 'cache' / 'toy_vfm'} (1 entries)" in out
    assert out.index("latents (1") < out.index("toy_vfm (1")  # largest first
    assert "3.1 KiB  in total" in out


def test_official_weights_present_or_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VAVAE_LAB_WEIGHTS", str(tmp_path / "weights"))
    folders, files = official_weights()
    assert folders[0] == tmp_path / "weights" and folders[-1] == tmp_path / "data" / "weights"
    names = [name for name, _ in files]
    assert set(FALLBACK_OFFICIAL_FILES) <= set(names) and all(path is None for _, path in files)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "latents_stats.pt").write_bytes(b"x" * 2048)
    out = _doctor(capsys)
    assert f"present  latents_stats.pt  {tmp_path / 'weights' / 'latents_stats.pt'} (2.0 KiB)" in out
    assert "missing  vavae-imagenet256-f16d32-dinov2.pt" in out


def test_every_offline_variable_switches_downloads_off(capsys, monkeypatch):
    """One registry of offline variables: each one alone turns `is_offline` (FID's Inception lookup, the VFM
    builder) on, and doctor names it."""
    from vavae_lab.download import OFFLINE_ENV_VARS, is_offline, offline_switches

    for var in OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert offline_switches() == [] and not is_offline() and "offline mode: off" in _doctor(capsys)
    for var in OFFLINE_ENV_VARS:
        monkeypatch.setenv(var, "1")
        assert offline_switches() == [var] and is_offline(), var
        assert f"offline mode: on ({var})" in _doctor(capsys)
        monkeypatch.delenv(var)


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 2 ** 20, 3 * 2 ** 40)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3072.0 GiB"]
