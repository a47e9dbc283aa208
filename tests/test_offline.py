"""Importing vavae_lab and running the smoke stages make no network call (sockets are blocked here)."""
import socket

import pytest

from vavae_lab.config import apply_overrides
from vavae_lab.presets import get_preset

from test_train_tokenizer import TINY


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_smoke_tokenizer_latents_and_dit_run_offline(no_network, tmp_path, monkeypatch):
    import importlib

    import vavae_lab
    from vavae_lab.latents import extract_latents
    from vavae_lab.train.dit import train_dit
    from vavae_lab.train.tokenizer import train_tokenizer

    monkeypatch.delenv("VAVAE_LAB_OFFLINE", raising=False)  # offline must not depend on the flag
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "cache"))
    importlib.reload(vavae_lab)
    config = apply_overrides(get_preset("smoke"), TINY + ["dit.train.steps=2", "dit.train.batch_size=16",
                                                          "dit.train.progress=false", "latents.shard_size=64"])
    train_tokenizer(config, tmp_path / "tok")
    extract_latents(config, tmp_path / "tok", tmp_path / "lat", progress=False)
    train_dit(config, tmp_path / "lat", tmp_path / "dit")
