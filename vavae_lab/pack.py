"""The pretrained pack: trained toy artifacts shipped under data/pack, found by their stage key, hash-checked.

A study stage (`vavae_lab.pipeline`) that misses its cache first asks the pack: a tokenizer or DiT whose key
is packed is restored into the cache folder (weights from safetensors, checked against the manifest's
sha256) instead of being trained; a packed result (a gFID, a Table 6 row, a probe) is copied as it is.
`VAVAE_LAB_RETRAIN=1` ignores the pack, so everything is trained from scratch by the same code.

    data/pack/manifest.json                one entry per artifact: stage, key, preset + overrides, files with
                                           sha256 and bytes, the command, commit, machine, date, wall time
    data/pack/<stage>/<key>.safetensors    weights (tokenizer: fp32, exact; DiT: EMA weights, fp32 or fp16)
    data/pack/<stage>/<key>.json.gz        what the run folder needs besides weights (config, history, ...), gzip'd
                                           (or plain <key>.json, as the entries --keep-presets carries over are)

`vavae_lab.study.packing.build_pack` fills it from a study cache root (`python -m vavae_lab pack --cache DIR`);
`stale_entries` there lists artifacts whose preset + overrides no longer give their key (a test keeps it empty).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

from .atomic import atomic_write_json
from .config import from_dict
from .errors import CheckpointError, ConfigError
from .paths import env_switch
from .stages import RESULTS, TRAINED

PACK_ENV, RETRAIN_ENV = "VAVAE_LAB_PACK", "VAVAE_LAB_RETRAIN"
MANIFEST, FORMAT = "manifest.json", 1
_REPO = Path(__file__).resolve().parent.parent


class PackError(CheckpointError):
    """A pack file that is missing, corrupt or does not match its manifest."""


def pack_dir() -> Path:
    """The pack folder: $VAVAE_LAB_PACK, else the repository's data/pack."""
    env = os.environ.get(PACK_ENV)
    return Path(env).expanduser() if env else _REPO / "data" / "pack"


def retraining() -> bool:
    """Whether VAVAE_LAB_RETRAIN asks to ignore the pack and train everything."""
    return env_switch(RETRAIN_ENV)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path | None = None) -> dict:
    """The pack's manifest ({"format", "artifacts": {"stage/key": entry}}); empty when there is no pack. A
    $VAVAE_LAB_PACK that is not a folder is a mistake (a typo must not silently mean "train everything")."""
    env = os.environ.get(PACK_ENV)
    if root is None and env and not pack_dir().is_dir():
        raise ConfigError(f"{PACK_ENV}={env} is not a folder; point it at a pack (a folder with {MANIFEST}), unset "
                          f"it to use data/pack, or set {RETRAIN_ENV}=1 to train everything")
    path = (root or pack_dir()) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "artifacts": {}}
    try:
        manifest = json.loads(path.read_text())
        manifest["artifacts"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PackError(f"{path} is not a pack manifest ({exc}); `git checkout {path}` restores it, or set "
                        f"{RETRAIN_ENV}=1 to train everything instead") from exc
    return manifest


def _verified(root: Path, entry: dict, name: str) -> Path:
    """The path of one packed file after checking its sha256 against the manifest."""
    path = root / name
    if not path.is_file():
        raise PackError(f"{path} is missing from the pack; `git checkout {root}` restores it, or set "
                        f"{RETRAIN_ENV}=1 to train instead")
    if sha256_file(path) != entry["files"][name]["sha256"]:
        raise PackError(f"{path} fails its sha256 check (corrupt or edited); `git checkout {path}` restores it, "
                        f"or set {RETRAIN_ENV}=1 to train instead")
    return path


META_SUFFIXES = (".json.gz", ".json")  # a tokenizer's or DiT's config and history beside its weights


def _meta(root: Path, entry: dict) -> dict:
    """The hash-checked metadata (config, history, ...) of a tokenizer or DiT entry, gzip'd or plain JSON."""
    name = next(n for n in sorted(entry["files"]) if n.endswith(META_SUFFIXES))
    data = _verified(root, entry, name).read_bytes()
    return json.loads(gzip.decompress(data) if name.endswith(".gz") else data)


def _read_pair(root: Path, entry: dict) -> tuple[dict, dict]:
    """(tensors, metadata) of a weights entry, both hash-checked."""
    from safetensors.torch import load_file

    names = sorted(entry["files"])
    tensors = {}
    meta = _meta(root, entry)
    for name in names:
        if name.endswith(".safetensors"):
            try:
                tensors = load_file(str(_verified(root, entry, name)))
            except Exception as exc:  # safetensors raises its own types for a truncated header
                raise PackError(f"{root / name} is not a readable safetensors file ({exc}); "
                                f"`git checkout {root / name}` restores it") from exc
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


def has_weights(entry: dict) -> bool:
    """Whether a tokenizer or DiT entry holds weights (a `--weights-except` run keeps only its config and history)."""
    return any(name.endswith(".safetensors") for name in entry["files"])


def packed_history(stage: str, key: str, *, root: Path | None = None) -> dict | None:
    """The training history (loss curves, evaluations) of a packed tokenizer or DiT run, weights or not; None when
    it is not packed or VAVAE_LAB_RETRAIN is set."""
    if retraining():
        return None
    root = root or pack_dir()
    entry = read_manifest(root)["artifacts"].get(f"{stage}/{key}")
    if entry is None:
        return None
    return _meta(root, entry)["history"]


def restore(stage: str, key: str, dest: Path, *, root: Path | None = None, quiet: bool = False) -> bool:
    """Write packed artifact `stage`/`key` to `dest` (a run folder, or a result's JSON path); False if not packed.

    Also False when VAVAE_LAB_RETRAIN is set. A packed file that fails its hash raises PackError.
    """
    from .checkpoint import atomic_save
    from .config import save_config
    from .runs import CONFIG_FILE, HISTORY_FILE, WEIGHTS_FILE

    if retraining():
        return False
    root = root or pack_dir()
    entry = read_manifest(root)["artifacts"].get(f"{stage}/{key}")
    if entry is None or (stage in TRAINED and not has_weights(entry)):
        return False
    if stage in RESULTS:
        name = next(iter(entry["files"]))
        atomic_write_json(dest, json.loads(_verified(root, entry, name).read_text()))
    else:
        tensors, meta = _read_pair(root, entry)
        dest.mkdir(parents=True, exist_ok=True)
        config = from_dict(meta["config"])
        save_config(config, dest / CONFIG_FILE)
        if stage == "tokenizer":
            atomic_save({"model": tensors, "config": meta["config"]}, dest / WEIGHTS_FILE["tokenizer"])
        else:
            weights = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
            tokenizer_dir = dest.parent.parent / "tokenizers" / meta["tokenizer_key"]
            atomic_save({"model": weights, "ema": weights, "config": meta["config"],
                         "latent_shape": meta["latent_shape"], "num_classes": meta["num_classes"],
                         "latent_mean": tensors["stats.mean"], "latent_std": tensors["stats.std"],
                         "tokenizer_sha256": meta["tokenizer_sha256"], "tokenizer_dir": str(tokenizer_dir)},
                        dest / WEIGHTS_FILE["dit"])
        atomic_write_json(dest / HISTORY_FILE, meta["history"])
    if not quiet:
        _say_loaded(stage, key, root, entry)
    return True


_TOLD: set = set()  # pack folders whose provenance this process has printed in full
_HELD: dict[str, list[float]] = {}  # inside IPython: stage -> wall seconds of the short lines held for the cell's end
_HOOKED: set = set()  # the IPython shells whose end-of-cell hook is registered


def _say_loaded(stage: str, key: str, root: Path, entry: dict) -> None:
    """One line per restored artifact: in full (command, machine, the retrain switch) the first time per pack; in a
    notebook the later ones are counted and said once at the end of the cell (`_say_held`)."""
    verb = "train" if stage in TRAINED else "compute"  # a result (a gFID, a floor) is computed, not trained
    if root in _TOLD:
        if _in_notebook():
            _HELD.setdefault(stage, []).append(entry["wall_s"])
        else:
            print(f"pack: {stage} {key} loaded ({entry['wall_s'] / 60:.1f} min to {verb})")
        return
    _TOLD.add(root)
    renamed = entry.get("preset_at_build")
    made = f"`{entry['command']}`" + (f", when {entry['preset']} was called {renamed}" if renamed else "")
    print(f"pack: {stage} {key} loaded from {root} (made by {made}, "
          f"{entry['wall_s'] / 60:.1f} min to {verb} on {entry['machine']}); {RETRAIN_ENV}=1 {verb}s it instead")


def _in_notebook() -> bool:
    """True inside an IPython shell, whose end-of-cell hook then says the held lines (registered once per shell)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if id(shell) not in _HOOKED:
        shell.events.register("post_execute", _say_held)
        _HOOKED.add(id(shell))
    return True


def _say_held() -> None:
    """The artifacts restored since the last call, as one line: how many of each stage and the minutes they took."""
    if not _HELD:
        return
    count = sum(len(walls) for walls in _HELD.values())
    stages = ", ".join(f"{stage} {len(walls)}" for stage, walls in sorted(_HELD.items()))
    minutes = sum(sum(walls) for walls in _HELD.values()) / 60
    _HELD.clear()
    print(f"pack: {count} more loaded ({stages}); {minutes:.1f} min of training and computing not redone")


def pack_size(root: Path | None = None) -> int:
    """Total bytes of the pack's files, as the manifest records them."""
    return sum(f["bytes"] for e in read_manifest(root)["artifacts"].values() for f in e["files"].values())
