"""Where generated artifacts live, the on/off switches read from the environment, and stable hashes that key
caches by their config."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_on(name: str) -> bool:
    """True when the variable is 1 / true / yes / on, read leniently (anything else is off), as other libraries read
    their own switches."""
    return os.environ.get(name, "").strip().lower() in _ON


def env_switch(name: str) -> bool:
    """An on/off environment variable: 1 / true / yes / on, or 0 / false / no / off / unset; anything else is a
    mistake answered in one line (a typo must not silently mean "on" or "off")."""
    value = os.environ.get(name, "").strip().lower()
    if value in _ON or value in _OFF:
        return value in _ON
    from .errors import ConfigError

    raise ConfigError(f"{name}={os.environ[name]!r} is neither on (1, true, yes, on) nor off (0, false, no, off); "
                      f"set {name}=1 to switch it on, or unset it")


def data_dir() -> Path:
    """Root for generated data and caches: $VAVAE_LAB_DATA, else the repo's data/, else ~/.cache/vavae_lab."""
    env = os.environ.get("VAVAE_LAB_DATA")
    if env:
        if Path(env).expanduser().is_file():
            from .errors import ConfigError

            raise ConfigError(f"VAVAE_LAB_DATA={env} is a file; point it at a folder (it is created if missing)")
        return Path(env).expanduser()
    repo_data = _PACKAGE_DIR.parent / "data"
    if (_PACKAGE_DIR.parent / "pyproject.toml").exists():
        return repo_data
    return Path.home() / ".cache" / "vavae_lab"


def cache_dir(*parts: str) -> Path:
    """A sub-folder of the cache root (created on demand)."""
    path = data_dir().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(obj, length: int = 12, *, unset: dict | None = None) -> str:
    """A short, stable hash of a dataclass, dict or JSON-able value, used as a cache key. `unset` {field: value}:
    fields added after keys were in use, hashed only when set away from that value, so older keys stay valid."""
    if is_dataclass(obj):
        obj = asdict(obj)
    if unset:
        obj = {k: v for k, v in obj.items() if not (k in unset and v == unset[k])}
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
