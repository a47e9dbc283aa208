"""Atomic file writes: a temp file beside the target, fsync, then a rename, so no reader ever sees half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[str], object], *, fsync: bool = True) -> Path:
    """Call write(tmp) on a temp file in path's folder (created if needed), fsync it, then rename it onto path.

    An exception or interrupt inside `write` leaves the old file (if any) untouched and no temp file behind.
    fsync=False keeps the rename atomic but skips the flush to disk: for many small files that can be
    regenerated (a folder of 50,000 sample PNGs), where a sync per file would dominate the write time.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a string atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj, *, indent: int = 1, **kwargs) -> Path:
    """Serialise obj as JSON first (a serialisation error writes nothing), then write it atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs))
