"""Where generated artifacts live, and stable hashes that key caches by their config."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """Root for generated data and caches: $VAVAE_LAB_DATA, else the repo's data/, else ~/.cache/vavae_lab."""
    env = os.environ.get("VAVAE_LAB_DATA")
    if env:
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
