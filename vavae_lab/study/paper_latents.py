"""Table 6 on the paper's own latents: the two demo files of hustvl/LightningDiT, fetched, checked and measured.

The official repository (https://github.com/hustvl/LightningDiT, MIT licence, Copyright (c) 2024 HUST Vision Lab)
publishes in tools/latent_demos the latents its Table 6 was computed on: 10,000 channel-normalised latent vectors
(32 channels, one random position of one random ImageNet image each) of the LDM f16d32 tokenizer and of VA-VAE
f16d32. `vavae_lab.official_file` fetches them on demand, size- and SHA-256-checked, into the weights folder;
nothing fetched is committed to this repository.

Runs. The paper averages 10 runs, each on a fresh sample of 10,000 vectors. The demo files hold exactly one such
sample, and with sklearn's default PCA start the t-SNE of a fixed set of vectors is the same for every seed, so
here run r embeds all 10,000 vectors from a random start seeded r (init="random"): the spread over runs is the
spread of the t-SNE optimisation, not of the sampling. Each result is cached under data/cache/study/uniformity,
keyed on the file's SHA-256 and the settings, so the t-SNE runs are paid once.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..analysis.uniformity import METRICS, TSNE_INITS, load_source, uniformity_metrics
from ..atomic import atomic_write, atomic_write_json
from ..download import OFFICIAL_FILES, offline, official_file, sha256_of, weights_dirs
from ..errors import ConfigError, DataError, WeightsUnavailableError
from ..paths import cache_dir, config_hash
from ..stages import STAGES
from . import variants as V

# label -> (official file, its row in variants.TABLE6_PAPER: "" without VF, "_vf" with it)
PAPER_LATENTS: dict[str, tuple[str, str]] = {
    "f16d32": ("latents_cache_f16d32.pt", ""),
    "VA-VAE f16d32": ("latents_cache_f16d32_vfdinov2.pt", "_vf"),
}
LICENCE = "MIT licence, Copyright (c) 2024 HUST Vision Lab"
CHANNELS = 32  # f16d32
INIT = "random"  # the t-SNE start of each run (see the module docstring)
# how close to the paper a mean must be for "within" (density CV, Gini, normalised entropy)
TOLERANCE = {"density": 0.015, "gini": 0.01, "entropy": 0.002}
COLUMNS = [("tokenizer", "latents", ""),
           *[c for k, m in METRICS.items() if k in TOLERANCE
             for c in ((k, m.label, m.fmt), (f"{k}_std", "+-", m.fmt), (f"paper_{k}", "paper", ".3f"))],
           ("within", "within tolerance", ""), ("n", "n", ""), ("runs", "runs", ""),
           ("minutes", "t-SNE min", ".1f")]


def paper_latent_files(root: str | Path | None = None, *, download_missing: bool = True,
                       progress: bool = False) -> dict[str, Path]:
    """The two demo latent files by label (see PAPER_LATENTS), fetched if absent and online, SHA-256 checked."""
    paths, missing = {}, []
    for label, (name, _) in PAPER_LATENTS.items():
        try:
            paths[label] = official_file(name, root, download_missing=download_missing, progress=progress)
        except WeightsUnavailableError as exc:
            missing.append((name, exc))
    if missing:
        names = " and ".join(name for name, _ in missing)
        cause = missing[0][1].__cause__
        why = ("VAVAE_LAB_OFFLINE=1" if download_missing and offline() else "not downloaded" if not download_missing
               else f"download failed: {cause}" if cause is not None else "download failed")
        prefix = OFFICIAL_FILES[missing[0][0]].url.rsplit("/", 1)[0]
        raise WeightsUnavailableError(
            f"the paper's latents are not here ({why}): fetch {names} from {prefix}/ (hustvl/LightningDiT, "
            f"{LICENCE}) and put them in {weights_dirs(root)[0]}, or call vavae_lab.official_file(name) online")
    for label, path in paths.items():
        entry = OFFICIAL_FILES[PAPER_LATENTS[label][0]]
        digest = sha256_of(path)
        if entry.sha256 is not None and digest != entry.sha256:
            raise DataError(f"{path} is not the published {path.name} (SHA-256 {digest[:12]}..., expected "
                            f"{entry.sha256[:12]}...); delete it and fetch it again from {entry.url}")
    return paths


def load_paper_latents(path: str | Path) -> torch.Tensor:
    """The (N, 32) float tensor of one demo latent file, or DataError naming the file and the shape it holds."""
    x = load_source(path)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != CHANNELS:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise DataError(f"{path} holds {shape}, not the (N, {CHANNELS}) latent vectors of the paper's demo files")
    return x.float()


def _first(npz: Path, result: dict) -> dict:
    """Run 0 of a cached file result as a single_run-style dict (embedding, densities, metrics) for the plots."""
    with np.load(npz) as arrays:
        first = {"embedding": arrays["embedding"], "densities": arrays["densities"]}
    return {**first, "seed": result["seeds"][0], **{k: result[k]["values"][0] for k in METRICS}}


def _save_arrays(path: str, first: dict) -> None:
    """Run 0's embedding and densities into an .npz at `path` (any file name)."""
    with open(path, "wb") as fh:
        np.savez(fh, embedding=np.asarray(first["embedding"]), densities=np.asarray(first["densities"]))


def file_uniformity(path: str | Path, *, n: int = 10000, runs: int = 3, seed: int = 0, init: str = INIT,
                    perplexity: float = 30.0, max_iter: int = 1000, workers: int = 1, progress: bool = False,
                    root: str | Path | None = None) -> dict:
    """Table 6 metrics of an (N, C) latent tensor file over `runs` t-SNE runs, cached by the file's SHA-256.

    Returns uniformity_metrics' dict (mean, std and values per metric, n, runs, seconds, tsne_seconds) plus
    "file_sha256", "cached" (read from the cache) and "first" (run 0's embedding and densities, for the panels).
    """
    if init not in TSNE_INITS:
        raise ConfigError(f"t-SNE init={init!r} is not one of {TSNE_INITS}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a .pt/.npy/.safetensors file of (N, C) latent vectors")
    digest = sha256_of(path)
    key = config_hash({"file_sha256": digest, "n": n, "runs": runs, "seed": seed, "init": init,
                       "perplexity": perplexity, "max_iter": max_iter})
    folder = (Path(root) if root is not None else cache_dir("study")) / STAGES["uniformity"].folder
    json_path, npz_path = folder / f"file-{key}.json", folder / f"file-{key}.npz"
    if json_path.is_file() and npz_path.is_file():
        result = json.loads(json_path.read_text())
        return {**result, "cached": True, "first": _first(npz_path, result)}
    x = load_source(path)
    if x.ndim != 2:
        raise DataError(f"{path} holds a tensor of shape {tuple(x.shape)}; expected (N, C) latent vectors")
    t0 = time.perf_counter()
    result = uniformity_metrics(x, n=n, runs=runs, seed=seed, perplexity=perplexity, max_iter=max_iter,
                                workers=workers, progress=progress, init=init, keep_first=True)
    first = result.pop("first")
    result.update({"file": path.name, "file_sha256": digest, "seconds": time.perf_counter() - t0})
    atomic_write(npz_path, lambda tmp: _save_arrays(tmp, first))
    atomic_write_json(json_path, result, default=float)
    return {**result, "cached": False, "first": first}


def table6_paper_latents(paths: Mapping[str, str | Path], *, n: int = 10000, runs: int = 3, seed: int = 0,
                         init: str = INIT, workers: int = 1, progress: bool = False) -> list[dict]:
    """Table 6 on the paper's latents: per file the metrics' mean +- std over t-SNE runs beside the paper's values."""
    rows = []
    for label, path in paths.items():
        if label not in PAPER_LATENTS:
            raise ConfigError(f"unknown paper latents {label!r}; choose from {', '.join(PAPER_LATENTS)}")
        r = file_uniformity(path, n=n, runs=runs, seed=seed, init=init, workers=workers, progress=progress)
        paper = V.TABLE6_PAPER[PAPER_LATENTS[label][1]]
        within = all(abs(r[k]["mean"] - paper[k]) <= tol for k, tol in TOLERANCE.items())
        rows.append({"tokenizer": label, **{k: r[k]["mean"] for k in METRICS},
                     **{f"{k}_std": r[k]["std"] for k in METRICS}, **{f"{k}_values": r[k]["values"] for k in METRICS},
                     **{f"paper_{k}": paper.get(k) for k in METRICS}, "within": within, "n": r["n"],
                     "runs": r["runs"], "init": r["init"], "minutes": sum(r["tsne_seconds"]) / 60,
                     "wall_minutes": r["seconds"] / 60, "cached": r["cached"], "first": r["first"]})
    return rows


READ_COLUMNS = [("metric", "metric", ""), ("paper_plain", "paper's latents: f16d32", ""),
                ("paper_vf", "VA-VAE f16d32", ""), ("paper_spreads", "change / run std", "+.1f"),
                # the toy's rows are the top rung of the preset's ladder without and with VF (Ladder.uniformity)
                ("toy_plain", "toy: top rung", ""), ("toy_vf", "toy: + VF", ""),
                ("toy_spreads", "change / run std", "+.1f"), ("agree", "VF more uniform in both", "")]


def _vf_change(plain: Mapping, vf: Mapping, key: str) -> tuple[float, float, float | None, bool]:
    """(plain, vf, change in units of the runs' pooled std or None, whether VF is the more uniform) of a metric."""
    a, b = float(plain[key]), float(vf[key])
    spread = float(np.sqrt((plain.get(f"{key}_std", 0.0) ** 2 + vf.get(f"{key}_std", 0.0) ** 2) / 2))
    more_uniform = (b > a) if METRICS[key].higher_is_uniform else (b < a)
    return a, b, ((b - a) / spread if spread > 0 else None), more_uniform


def read_against(toy_rows: list[dict], paper_rows: list[dict]) -> list[dict]:
    """Per metric, how VF moves it on the paper's latents and on the toy ones (toy Table 6: a plain tokenizer and
    its VF twin).

    The values are strings in the metric's format (READ_COLUMNS shows them); the changes are numbers.
    """
    toy = {"_vf" if V.TOKENIZERS[r["name"]].vf else "": r for r in toy_rows if r.get("name") in V.TOKENIZERS}
    paper = {PAPER_LATENTS[r["tokenizer"]][1]: r for r in paper_rows if r.get("tokenizer") in PAPER_LATENTS}
    missing = [f"{what} {'with' if v else 'without'} VF" for what, rows in (("toy", toy), ("paper", paper))
               for v in ("", "_vf") if v not in rows]
    if missing:
        raise DataError("read_against needs the rows without and with VF of both tables; missing "
                        + ", ".join(missing))
    out = []
    for key in TOLERANCE:
        pa, pb, pz, p_up = _vf_change(paper[""], paper["_vf"], key)
        ta, tb, tz, t_up = _vf_change(toy[""], toy["_vf"], key)
        fmt = METRICS[key].fmt
        out.append({"metric": METRICS[key].label, "paper_plain": format(pa, fmt), "paper_vf": format(pb, fmt),
                    "paper_spreads": pz, "toy_plain": format(ta, fmt), "toy_vf": format(tb, fmt),
                    "toy_spreads": tz, "paper_more_uniform": p_up,
                    "toy_more_uniform": t_up, "agree": p_up and t_up})
    return out
