"""The one rule for what a cached result depends on: a key per stage, and where each stage keeps its runs.

`stage_key(config, stage)` hashes exactly the stage's own config sections (stages.STAGES) chained with the key of the
stage it consumes, minus the fields that change speed or display but no result (IGNORED). The study, the benchmarks
and the command line's defaults all key runs through here, so a run any of them trained is found by the others.

    root/tokenizers/<key>/   tokenizer.pt, history.json, config.yaml, checkpoints
    root/latents/<key>/      shards, stats.safetensors, meta.json
    root/features/<key>/     REPA's VFM features of the training images
    root/dits/<key>/         dit.pt (self-contained: latent shape, classes, mean/std, tokenizer sha256)
    root/dits/<key>/snapshots/   EMA weights after the steps of dit.snapshots (a convergence curve)
    root/results/<key>.json  a gFID evaluation (of a snapshot: keyed by the DiT key, the step and n)
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import Config, to_dict
from .paths import cache_dir, config_hash
from .stages import STAGES

# dotted fields (relative to their section) that change no result: speed, display, safety caps
IGNORED = {
    "data": ("num_workers",),
    "tokenizer": ("train.progress",),
    "latents": ("batch_size",),
    "dit": ("train.progress", "snapshots"),  # snapshots only keep copies of the EMA weights along the way
    "sample": ("batch_size", "max_nfe"),  # max_nfe only stops a runaway dopri5
}
# fields added after keys were in use (the pack): keyed only when set away from the value that gives the earlier
# behaviour, so every older key stays valid (section -> dotted field -> that value)
KEYED_WHEN_SET = {
    "data": {"crop": "center", "shape_set": "classic"},  # the ImageNet presets' official random crop; the outline shapes
    # official VFM input; stage chains; the toy presets' colour-balanced pixel loss
    "tokenizer": {"vf.preprocess": "normalized", "init_from": None, "loss.colour_balance": 0.0},
    "dit": {"seed": None},  # unset, the top-level seed decides
    "metrics": {"toy.version": 1},  # the multi-factor toy FID network (version 2)
}


def _drop(d: dict, dotted: str, only_if=...) -> None:
    """Remove a dotted field from a nested dict in place (absent: nothing); with `only_if`, only at that value."""
    *parents, leaf = dotted.split(".")
    node = d
    for p in parents:
        node = node.get(p, {})
    if leaf in node and (only_if is ... or node[leaf] == only_if):
        del node[leaf]


def stage_fields(config: Config, section: str) -> dict | int:
    """A config section as keyed: without its IGNORED fields, and KEYED_WHEN_SET fields only when set.

    A tokenizer.init_from preset name is keyed as the key of the stage it names (presets.previous_stage), so
    retraining an earlier stage of a chain reaches every later one.
    """
    if section == "seed":
        return config.seed
    d = to_dict(getattr(config, section))
    for dotted in IGNORED.get(section, ()):
        _drop(d, dotted)
    for dotted, unset in KEYED_WHEN_SET.get(section, {}).items():
        _drop(d, dotted, only_if=unset)
    if section == "dit" and d["repa"]["weight"] == 0:
        del d["repa"]  # REPA with weight 0 is off: none of its fields changes a DiT
    init = d.get("init_from") if section == "tokenizer" else None
    if init is not None and "/" not in init:
        from .presets import previous_stage

        d["init_from"] = {"preset": init, "tokenizer": stage_key(previous_stage(config), "tokenizer")}
    return d


def stage_key(config: Config, stage: str, *, n: int | None = None, runs: int | None = None,
              step: int | None = None, settings: dict | None = None) -> str:
    """The cache key of `stage` ("tokenizer", "latents", "dit", "generation", "uniformity", "probe") of `config`.

    It hashes the stage's own sections (STAGES) and the key of the stage it consumes, so a change reaches
    every stage downstream of it and none upstream. "generation" needs the sample count `n` (and, for a DiT
    snapshot, its `step`; None is the finished DiT); "uniformity" the vector count `n` and the number of t-SNE `runs`;
    "alignment" (REPA's projector fitted on the frozen DiT) the fit's `settings`, beside the VFM features it reads.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    parent, sections = STAGES[stage].consumes, STAGES[stage].sections
    if stage == "uniformity":
        return config_hash([stage_key(config, parent), n, runs])
    if stage == "probe":
        return config_hash([stage_key(config, parent), to_dict(config.tokenizer.probe)])
    if stage == "features":
        return config_hash(features_identity(config))
    if stage == "alignment":
        r = config.dit.repa
        return config_hash([stage_key(config, parent), features_identity(config), r.depth, r.projector_dim, settings])
    record = {s: stage_fields(config, s) for s in sections}
    if parent is not None:
        record[parent] = stage_key(config, parent)
    if stage in ("generation", "floor", "reconstruction"):
        if n is None:
            raise ValueError(f"the {stage} key needs the sample count n")
        record["n"] = n
    if stage == "generation" and step is not None:
        record["step"] = step
    return config_hash(record)


def features_identity(config: Config) -> dict:
    """What REPA's feature cache depends on: the images (data, flips), the VFM and the DiT's token grid."""
    from .build import token_grid, toy_vfm_config

    r = config.dit.repa
    toy = to_dict(toy_vfm_config(config)) if r.foundation.startswith("toy") else None
    return {"data": stage_fields(config, "data"), "flip": config.latents.flip, "foundation": r.foundation,
            "pretrained_path": r.pretrained_path, "toy_vfm": toy, "grid": token_grid(config)}


def stage_dir(config: Config, stage: str, root: str | Path | None = None) -> Path:
    """The run folder of a tokenizer, latents or dit stage under `root` (default data/cache/study)."""
    root = Path(root) if root is not None else cache_dir("study")
    return root / STAGES[stage].folder / stage_key(config, stage)


def result_file(stage: str, key: str, root: str | Path | None = None) -> Path:
    """Where the result JSON of `stage` with cache key `key` lives under `root` (default data/cache/study)."""
    root = Path(root) if root is not None else cache_dir("study")
    return root / STAGES[stage].folder / f"{key}.json"


def result_path(config: Config, stage: str, root: str | Path | None = None, **kw) -> Path:
    """The JSON file of a cached generation, uniformity or probe result under `root`, its folder made."""
    path = result_file(stage, stage_key(config, stage, **kw), root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cached_result(config: Config, stage: str, root: str | Path | None = None, **kw) -> tuple[Path, dict | None]:
    """(path, result) of a generation, uniformity or probe result: from the cache, else the pack, else None."""
    from . import pack

    path = result_path(config, stage, root, **kw)
    if not path.exists():
        pack.restore(stage, path.stem, path)
    return path, (json.loads(path.read_text()) if path.exists() else None)


def save_result(config: Config, stage: str, path: Path, result: dict, **kw) -> dict:
    """Write a result JSON and, beside it, the config and key arguments that made it (what the pack records)."""
    from .atomic import atomic_write_json

    atomic_write_json(path, result, default=float)
    atomic_write_json(path.with_name(f"{path.stem}.config.json"), {"config": to_dict(config), "key_args": kw})
    return result
