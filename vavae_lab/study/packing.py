"""Building the pretrained pack from a study cache, and checking that its keys match the current configs."""
from __future__ import annotations

import datetime
import gzip
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from ..atomic import atomic_write_json
from ..build import latent_name
from ..config import Config, from_dict, load_config, to_dict
from ..errors import ConfigError
from ..pack import FORMAT, MANIFEST, pack_dir, read_manifest, sha256_file
from ..keys import stage_key
from ..runs import CONFIG_FILE, WEIGHTS_FILE, finished, read_history
from ..stages import RESULTS, STAGES, TRAINED

_REPO = Path(__file__).resolve().parents[2]


def overrides_of(config: Config) -> dict:
    """The {dotted key: value} overrides that turn the config's preset into `config` (what the pack records)."""
    from ..presets import get_preset

    base, mine = _flat(to_dict(get_preset(config.name))), _flat(to_dict(config))
    return {k: v for k, v in sorted(mine.items()) if base.get(k) != v}


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _provenance() -> dict:
    """Commit (with -dirty), machine and date of a pack build."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    # the pack being rewritten does not make the code dirty
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)data/pack"):
        commit += "-dirty"
    cpu = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        cpu = f"{torch.cuda.get_device_name(0)} + {cpu}"
    return {"commit": commit, "machine": f"{cpu}, {platform.system()} {platform.machine()}, torch {torch.__version__}",
            "date": datetime.date.today().isoformat()}


def yaml_config(run: Path) -> dict:
    """The config a run folder was trained with (its config.yaml) as a dict."""
    return yaml.safe_load((run / CONFIG_FILE).read_text())


def _write(root: Path, name: str, write) -> dict:
    """Write one pack file with `write(path)`; returns its manifest record (sha256, bytes)."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _add_weights(stage: str, key: str, run: Path, root: Path, dit_dtype: torch.dtype,
                 weights: bool = True) -> tuple[dict, Config, float]:
    """Pack a tokenizer or DiT run folder (with `weights=False` only its config and history, no weights); returns
    (files, config, wall seconds)."""
    from safetensors.torch import save_file

    from ..checkpoint import load_checkpoint

    history = read_history(run)
    if stage == "tokenizer":
        state = load_checkpoint(run / WEIGHTS_FILE["tokenizer"], map_location="cpu")
        tensors = {k: v.contiguous() for k, v in state["model"].items()}
        meta = {"config": state["config"], "history": history}
    else:
        state = load_checkpoint(run / WEIGHTS_FILE["dit"], map_location="cpu")
        tensors = {f"ema.{k}": v.to(dit_dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in state["ema"].items()}
        tensors.update({"stats.mean": state["latent_mean"].float().contiguous(),
                        "stats.std": state["latent_std"].float().contiguous()})
        config = from_dict(state["config"])
        meta = {"config": state["config"], "history": history, "latent_shape": list(state["latent_shape"]),
                "num_classes": int(state["num_classes"]), "tokenizer_sha256": state["tokenizer_sha256"],
                "tokenizer_key": stage_key(config, "tokenizer")}
    text = json.dumps(meta, default=float).encode()  # gzip'd with no timestamp: the same run packs to the same bytes
    files = {f"{stage}/{key}.json.gz": _write(root, f"{stage}/{key}.json.gz",
                                              lambda p: p.write_bytes(gzip.compress(text, mtime=0)))}
    if weights:
        files[f"{stage}/{key}.safetensors"] = _write(root, f"{stage}/{key}.safetensors",
                                                     lambda p: save_file(tensors, str(p)))
    return files, from_dict(meta["config"]), float(history.get("wall_time_s") or 0.0)


def weights_filter(weights_except: Sequence[str], preset: str | None = None):
    """A test of a run's config for `build_pack`: False when its preset overrides include any of the "key=value"
    pairs in `weights_except` (e.g. "dit.model.size=toy-M/1"), whose weights are then left out of the pack.
    With `preset`, each pair must be a valid override of it (a misspelt key would otherwise match nothing) and
    is compared as the config would store it (so 1e-3 matches 0.001); without, as text."""
    pairs = []
    for item in weights_except:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"--weights-except {item}: give key=value, e.g. dit.model.size=toy-M/1")
        if preset is not None:
            try:
                value = _flat(to_dict(load_config(preset, [item]))).get(key, value)
            except ConfigError as exc:
                raise ConfigError(f"--weights-except {item}: {exc}") from None
            if _flat(to_dict(load_config(preset))).get(key) == value:
                raise ConfigError(f"--weights-except {item}: that is the {preset} preset's own value, which no run "
                                  "overrides, so it would leave every weight in; name a value a run sets")
        pairs.append((key, value))

    def keep(config: Config | dict) -> bool:  # a run's config, or a pack entry's recorded overrides
        mine = config if isinstance(config, dict) else overrides_of(config)
        return not any(k in mine and (mine[k] == v or str(mine[k]) == str(v)) for k, v in pairs)
    return keep


def build_pack(cache: Path, *, command: str, preset: str, root: Path | None = None, dit_dtype: str = "float16",
               stages=TRAINED + RESULTS, weights_except: Sequence[str] = (),
               keep_presets: Sequence[str] = (), histories_only: bool = False) -> dict:
    """Pack every finished tokenizer, DiT and result of `preset` in the study cache root `cache` into `root`.

    Replaces the pack (regenerated, never patched). Runs of other presets, and runs whose config no longer
    gives their folder name (older code), are left out. Results are packed when their config sidecar says
    which config made them (`keys.save_result` writes one beside each result). `weights_except`
    ("key=value" overrides) leaves out the weights of the runs that have any of them, keeping their results and
    their config and history (`pack.packed_history`): for runs a notebook reads only numbers and curves from
    (e.g. the larger DiTs of the scaling table, a second seed's loss curves), to fit the budget.
    `keep_presets` carries over the entries of the pack at `root` that one of these presets (with the entry's
    recorded overrides) still keys to the same key (`kept_entries`), byte for byte, except that a kept run with
    one of the `weights_except` overrides loses its weights file (its config, history and results stay): how a
    study that no notebook samples any more shrinks to its numbers and curves.
    `histories_only` packs the cache's tokenizers and DiTs without weights and never replaces a kept entry with
    them: how a stage still training persists its finished results and curves within the budget.
    """
    keep = weights_filter(weights_except, preset)
    root = root or pack_dir()
    for name in (preset, *keep_presets):
        load_config(name)  # an unknown preset: one line naming the presets
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the pack folder {root} is a file; pass --out a folder (it is replaced as a whole)")
    found = 0  # the cache's runs and results of `preset`: none, and nothing kept, means a wrong --cache or --preset
    prov, entries = _provenance(), {}  # before the old pack is removed
    staging = root.with_name(root.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name, entry in kept_entries(root, keep_presets).items():
        if entry["stage"] in TRAINED and not keep(entry["overrides"]):  # --weights-except reaches kept runs too
            entry = {**{k: v for k, v in entry.items() if k != "dtype"},
                     "files": {f: rec for f, rec in entry["files"].items() if not f.endswith(".safetensors")}}
        for file in entry["files"]:
            (staging / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / file, staging / file)
        entries[name] = entry
    dtype = {"float16": torch.float16, "float32": torch.float32}[dit_dtype]
    for stage in stages:
        if stage in TRAINED:
            for run in sorted((cache / STAGES[stage].folder).glob("*")):
                if not finished(run, stage):
                    continue
                config = from_dict(yaml_config(run))
                if config.name != preset or stage_key(config, stage) != run.name:
                    continue
                if histories_only and f"{stage}/{run.name}" in entries:
                    continue  # a kept entry (perhaps with weights) stays as it is
                weights = keep(config) and not histories_only
                found += 1
                files, config, wall = _add_weights(stage, run.name, run, staging, dtype, weights)
                dtype_name = (dit_dtype if stage == "dit" else "float32") if weights else None
                _put(entries, f"{stage}/{run.name}", _entry(stage, run.name, config, files, command, wall, prov,
                                                           dtype_name))
        else:
            folder = STAGES[stage].folder
            for sidecar in sorted((cache / folder).glob("*.config.json")):
                key = sidecar.name[: -len(".config.json")]
                result = cache / folder / f"{key}.json"
                if not result.is_file():
                    continue
                side = json.loads(sidecar.read_text())
                config = from_dict(side["config"])
                if config.name != preset or stage_key(config, stage, **side.get("key_args", {})) != key:
                    continue
                name = f"{stage}/{key}.json"
                found += 1
                files = {name: _write(staging, name, lambda p: shutil.copyfile(result, p))}
                wall = float(json.loads(result.read_text()).get("seconds") or 0.0)
                _put(entries, f"{stage}/{key}", _entry(stage, key, config, files, command, wall, prov, None,
                                                      key_args=side.get("key_args", {})))
    if not found and not entries:  # a pack of nothing replaces nothing
        shutil.rmtree(staging)
        raise ConfigError(f"{cache} holds no finished {preset} run or result and nothing is kept, so the pack at "
                          f"{root} is left as it is; check --cache and --preset (--keep-presets carries packed "
                          "entries over)")
    manifest = {"format": FORMAT, "artifacts": dict(sorted(entries.items()))}
    atomic_write_json(staging / MANIFEST, manifest)
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return manifest


def _put(entries: dict, name: str, entry: dict) -> None:
    """Add a freshly packed entry, unless a kept one holds byte for byte the same files: then the kept entry, with
    the command, commit and date that made them, stays (a cache that still holds a packed result repacks to it)."""
    old = entries.get(name)
    if old is None or old["files"] != entry["files"]:
        entries[name] = entry


def kept_entries(root: Path, presets: Sequence[str]) -> dict:
    """The entries of the pack at `root` that one of `presets` + the entry's overrides keys to the entry's key,
    each under that preset's name (the name it was built under kept as "preset_at_build" when it differs: a
    renamed preset), its files checked against their sha256. What `build_pack(keep_presets=...)` carries over."""
    kept = {}
    for name, entry in read_manifest(root)["artifacts"].items():
        for preset in presets:
            config = load_config(preset, entry["overrides"])
            if stage_key(config, entry["stage"], **entry.get("key_args", {})) != entry["key"]:
                continue
            for file, rec in entry["files"].items():
                if sha256_file(root / file) != rec["sha256"]:
                    raise ConfigError(f"{root / file} fails its sha256 check, so it cannot be kept; "
                                      f"`git checkout {root}` restores the pack")
            entry = dict(entry)
            if entry["preset"] != preset:
                entry["preset_at_build"] = entry.get("preset_at_build", entry["preset"])
                entry["preset"] = preset
            kept[name] = entry
            break
    return kept


def _entry(stage, key, config: Config, files, command, wall, prov, dtype, key_args=None) -> dict:
    """One manifest entry."""
    entry = {"stage": stage, "key": key, "preset": config.name, "overrides": overrides_of(config),
             "files": files, "command": command, "wall_s": wall, **prov}
    if stage != "floor":  # every other stage runs on a tokenizer's latents
        entry["latent"] = latent_name(config)
    if dtype:
        entry["dtype"] = dtype
    if key_args:
        entry["key_args"] = key_args
    return entry


def stale_entries(root: Path | None = None) -> list[str]:
    """Pack entries whose preset + recorded overrides no longer give their key under the current code."""
    stale = []
    for name, entry in read_manifest(root)["artifacts"].items():
        config = load_config(entry["preset"], entry["overrides"])
        if stage_key(config, entry["stage"], **entry.get("key_args", {})) != entry["key"]:
            changed = " ".join(f"{k}={v}" for k, v in entry["overrides"].items()) or "no overrides"
            stale.append(f"{name} ({entry['preset']}, {changed})")
    return stale
