"""Atomic file writes (a temp file beside the target, fsync, then a rename, so no reader ever sees half a file), and
a lock that lets one process at a time train what several parallel jobs need."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


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


@contextmanager
def held(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock named after `path` (a hidden `.<name>.lock` beside it) for the block.

    Wrap "if it is not made yet, make it" in it: of two processes that need the same run or network at once
    (`reproduce --jobs 2`), the second waits and then finds it made, instead of training it alongside the first
    into the same folder. A no-op where the OS has no flock (Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; parallel jobs there may train a shared run twice
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
