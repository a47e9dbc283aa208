"""Move a trained toy study between machines: pack its small artifacts (no latent caches) into .tar files."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import torch

from ..errors import DataError
from ..latents.stats import STATS_FILE
from ..paths import cache_dir
from ..runs import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, WEIGHTS_FILE

# everything a notebook reads from a finished study; latent caches (hundreds of MB) are re-extracted on demand.
# A dit.pt carries its latent stats; stats.safetensors travels only for DiTs trained before it did.
_KEEP = {*WEIGHTS_FILE.values(), HISTORY_FILE, CONFIG_FILE, METRICS_FILE, STATS_FILE}
_SHARED = ("toy_vfm", "fid_features", "generation_reference")


def _slim_dit(path: Path, dest: Path) -> None:
    """Copy dit.pt keeping only the EMA weights (stored once: 'model' points at the same tensors)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["model"] = state["ema"]
    torch.save(state, dest)


def export_study(out: str | Path, *, dit_runs: set[str] | None = None, max_bytes: int = 15 * 2**20) -> list[Path]:
    """Pack the study cache into out-0.tar, out-1.tar, ... (each under max_bytes); returns the files written.

    dit_runs: DiT cache keys whose weights travel (None: all); the others travel as history and results only.
    """
    root = cache_dir()
    files: list[tuple[Path, str]] = []
    for sub in ("study",) + _SHARED:
        base = root / sub
        for path in sorted(base.rglob("*")) if base.exists() else []:
            rel = path.relative_to(root)
            if not path.is_file() or path.name.startswith(".") or ("latents" in rel.parts[:2] and sub == "study"):
                continue
            if sub == "study" and rel.parts[1] in ("tokenizers", "dits") and path.name not in _KEEP:
                continue
            if path.name == WEIGHTS_FILE["dit"] and dit_runs is not None and rel.parts[2] not in dit_runs:
                continue
            files.append((path, str(rel)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written, tar, size, index = [], None, 0, 0
    tmp = out.parent / f".{out.name}.slim.pt"
    for path, rel in files:
        source = path
        if path.name == WEIGHTS_FILE["dit"]:
            _slim_dit(path, tmp)
            source = tmp
        need = source.stat().st_size + 1024
        if tar is None or size + need > max_bytes:
            if tar is not None:
                tar.close()
            written.append(out.parent / f"{out.name}-{index}.tar")
            tar, size, index = tarfile.open(written[-1], "w"), 0, index + 1
        tar.add(source, arcname=rel)
        size += need
    if tar is not None:
        tar.close()
    if tmp.exists():
        os.remove(tmp)
    return written


def import_study(*archives: str | Path) -> int:
    """Unpack archives written by `export_study` into this machine's cache (existing files are kept)."""
    root = cache_dir()
    count = 0
    for archive in archives:
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    target = (root / member.name).resolve()
                    if not member.isfile() or root.resolve() not in target.parents:
                        raise DataError(f"{archive}: unexpected entry {member.name!r}; not a study archive")
                    if target.exists():
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    tar.extract(member, root, filter="data")
                    count += 1
        except tarfile.TarError as exc:
            raise DataError(f"{archive} is not a readable study archive ({exc}); copy it again") from exc
    return count
