"""Latent uniformity (paper Table 6): t-SNE of sampled latent vectors, a Gaussian KDE, and three spread metrics.

Protocol (docs/paper.md §7): sample n latent vectors (one random spatial position per image, channel-normalised),
embed them in 2-D with scikit-learn's t-SNE (perplexity 30), fit scipy's `gaussian_kde` on the embedding and
evaluate it at every point -> densities p. Then density = std(p) / mean(p), Gini of p, and the base-2 entropy
of p / sum(p) divided by log2(n). Lower density and Gini, higher entropy = more uniform. `METRICS` registers
them (key, function, direction, labels); everything that shows or tabulates them iterates it.

Run r of `uniformity_metrics` uses the seed `seed + r` for both the sampled positions and the t-SNE. With PCA
initialisation (sklearn's default) the t-SNE of a fixed set of vectors is deterministic, so runs over all vectors
of an (N, C) file differ only with init="random" (a random start per seed) or with n below N (another subsample).

Speed: t-SNE is nearly all of the time. scikit-learn's Barnes-Hut gradient is serial in its repulsive part,
so one run on 10,000 x 32 vectors takes about a minute on 2 CPU cores whatever n_jobs is; the KDE takes about
a second (scipy evaluates it in compiled code). `max_iter` trades accuracy for time (it changes the values;
1000 is sklearn's default and the paper's setting), and `workers` runs several seeds in parallel processes
(values unchanged), see benchmarks/uniformity.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError, DataError

_CHUNK = 512  # images read from a latent cache at a time


def _densities(p) -> np.ndarray:
    """p as a 1-D float64 array, checked to be finite, non-negative and not all zero."""
    arr = p.detach().cpu().double().numpy() if isinstance(p, torch.Tensor) else np.asarray(p, dtype=np.float64)
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise DataError("uniformity metrics need at least one density; got an empty array of densities")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.sum() <= 0:
        raise DataError("uniformity metrics need finite, non-negative densities with a positive sum; "
                        "pass the output of kde_densities")
    return arr


def density_cv(p) -> float:
    """Coefficient of variation std(p) / mean(p) (population std), the paper's "density" column."""
    arr = _densities(p)
    return float(arr.std() / arr.mean())


def gini(p) -> float:
    """Gini coefficient sum_k (2k - n - 1) p_(k) / (n sum p), p sorted ascending, k = 1..n (0 = all equal)."""
    arr = np.sort(_densities(p))
    n = arr.size
    k = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * k - n - 1) * arr) / (n * arr.sum()))


def normalized_entropy(p) -> float:
    """Base-2 entropy of p / sum(p) divided by log2(n) (1 = all equal); terms with p = 0 count as 0."""
    arr = _densities(p)
    if arr.size < 2:
        raise DataError("normalized entropy needs at least 2 densities (log2(1) = 0); sample more vectors")
    q = arr / arr.sum()
    q = q[q > 0]
    return float(-np.sum(q * np.log2(q)) / np.log2(arr.size))


@dataclass(frozen=True)
class UniformityMetric:
    """One spread metric of the KDE densities: its result key, function, direction and labels."""

    name: str  # key in every result dict and table row ("density"; "density_std", "paper_density", "probe_density")
    fn: Callable[[np.ndarray], float]  # densities -> value
    higher_is_uniform: bool  # True when a larger value means more uniform latents
    label: str  # column header in tables ("density CV")
    short: str  # name in the one-line summary under a scatter ("density CV" in "density CV 0.263 · ...")
    fmt: str  # number format in tables and summaries (".3f")


# The one registry of uniformity metrics: analysis, figures, widgets, study tables and the report iterate it.
METRICS: dict[str, UniformityMetric] = {m.name: m for m in (
    UniformityMetric("density", density_cv, False, "density CV", "density CV", ".3f"),
    UniformityMetric("gini", gini, False, "Gini", "Gini", ".3f"),
    UniformityMetric("entropy", normalized_entropy, True, "entropy", "entropy", ".4f"),
)}


def metrics_of(densities) -> dict[str, float]:
    """Every registered metric of one density vector, in registry order."""
    return {name: float(m.fn(densities)) for name, m in METRICS.items()}


def _pick(num_images: int, positions: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """min(n, num_images) distinct image indices (ascending) and one random spatial position for each."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"the number of latent vectors must be a positive integer, got {n!r}")
    if num_images < 1:
        raise DataError("no latents to sample from: the source holds 0 images")
    rng = np.random.default_rng(seed)
    count = min(int(n), num_images)
    images = np.sort(rng.choice(num_images, size=count, replace=False))
    return images, rng.integers(0, positions, size=count)


def _check_finite(x: np.ndarray, what: str) -> np.ndarray:
    """x unchanged, or DataError if it holds NaN or inf."""
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what} contain NaN or inf values; check the tokenizer run or the file")
    return x


def _from_cache(dataset, n: int, seed: int) -> np.ndarray:
    """Normalised vectors of a LatentDataset: unflipped images only, one random position each."""
    c, h, w = dataset.latent_shape
    images, pos = _pick(dataset.num_images, h * w, n, seed)
    out = np.empty((images.size, c), dtype=np.float32)
    for a in range(0, images.size, _CHUNK):
        idx = torch.from_numpy(images[a:a + _CHUNK])
        z, _ = dataset.get_batch(idx)
        if not dataset.normalize_latents:
            z = dataset.normalize(z)
        flat = z.reshape(z.shape[0], c, h * w)
        rows = torch.arange(z.shape[0])
        out[a:a + idx.numel()] = flat[rows, :, torch.from_numpy(pos[a:a + _CHUNK])].numpy()
    return _check_finite(out, f"the latents of {dataset.cache_dir}")


def sample_vectors(source, n: int, *, seed: int = 0) -> np.ndarray:
    """n latent vectors (n_used x C float32) from a LatentDataset, a cache dir, an (N, C) or (N, C, h, w) array.

    A cache gives normalised latents of its unflipped images, one random position per image; an (N, C, h, w)
    array likewise one random position per image; an (N, C) array gives n rows drawn without replacement.
    Arrays are used as given (normalise them per channel first). With n above what is available, all is used.
    """
    from ..latents.dataset import LatentDataset

    if isinstance(source, (str, Path)):
        source = LatentDataset(source, flip=False)
    if isinstance(source, LatentDataset):
        return _from_cache(source, n, seed)
    if isinstance(source, torch.Tensor):
        x = source.detach().cpu().float().numpy()
    elif isinstance(source, np.ndarray):
        x = np.asarray(source, dtype=np.float32)
    else:
        raise DataError(f"cannot sample latent vectors from a {type(source).__name__}; pass a LatentDataset, "
                        "a latent cache directory, or a tensor/array of shape (N, C) or (N, C, h, w)")
    if x.ndim == 2:
        rows, _ = _pick(x.shape[0], 1, n, seed)
        out = x[rows]
    elif x.ndim == 4:
        c, h, w = x.shape[1:]
        images, pos = _pick(x.shape[0], h * w, n, seed)
        out = x[images].reshape(images.size, c, h * w)[np.arange(images.size), :, pos]
    else:
        raise DataError(f"latents of shape {tuple(x.shape)} are neither (N, C) vectors nor (N, C, h, w) maps")
    return _check_finite(np.ascontiguousarray(out, dtype=np.float32), "the latents")


def vectors_with_patches(latents, images, n: int, *, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """The n latent vectors `sample_vectors(latents, n, seed=seed)` picks from (N, C, h, w) latents, each with the
    patch of its image (N, 3, H, W) that its grid position covers: (n x C vectors, n x 3 x H/h x W/w patches), so
    that a t-SNE map can be coloured by what the image shows there."""
    z, x = torch.as_tensor(latents), torch.as_tensor(images)
    if z.ndim != 4 or x.ndim != 4 or z.shape[0] != x.shape[0]:
        raise DataError(f"need (N, C, h, w) latents and their (N, 3, H, W) images, got {tuple(z.shape)} and "
                        f"{tuple(x.shape)}")
    h, w = z.shape[2:]
    ph, pw = x.shape[2] // h, x.shape[3] // w
    picked, pos = _pick(z.shape[0], h * w, n, seed)
    patches = torch.stack([x[i, :, (p // w) * ph:(p // w + 1) * ph, (p % w) * pw:(p % w + 1) * pw]
                           for i, p in zip(picked.tolist(), pos.tolist())])
    return sample_vectors(z, n, seed=seed), patches


def load_source(path: str | Path):
    """A latent cache directory as a LatentDataset, or the one tensor of a .pt, .npy or .safetensors file."""
    from ..latents.dataset import LatentDataset

    path = Path(path)
    if path.is_dir():
        return LatentDataset(path, flip=False)
    if not path.is_file():
        raise DataError(f"{path} does not exist; pass a latent cache directory or a .pt/.npy/.safetensors file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise DataError(f"{path} holds {len(tensors)} tensors ({', '.join(sorted(tensors))}); "
                                "save exactly one tensor of shape (N, C) or (N, C, h, w)")
            x = next(iter(tensors.values()))
        elif suffix in (".pt", ".pth"):
            x = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .pt, .npy or .safetensors, "
                            "or a latent cache directory")
    except DataError:
        raise
    except Exception as exc:  # a truncated or foreign file: name it and say what is expected
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {first}); expected one tensor of shape "
                        "(N, C) or (N, C, h, w)") from exc
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise DataError(f"{path} holds a {type(x).__name__}, not a tensor; save one tensor of shape (N, C) "
                        "or (N, C, h, w)")
    if x.ndim not in (2, 4) or x.shape[0] < 1:
        raise DataError(f"{path} holds a tensor of shape {tuple(x.shape)}; expected (N, C) vectors or "
                        "(N, C, h, w) latents")
    return x


TSNE_INITS = ("pca", "random")  # sklearn's t-SNE starts; "pca" (its default) ignores the seed


def embed_tsne(x, *, perplexity: float = 30.0, seed: int = 0, max_iter: int = 1000, n_jobs: int | None = None,
               verbose: int = 0, init: str = "pca") -> np.ndarray:
    """2-D t-SNE embedding (n x 2) of x with scikit-learn's defaults (Barnes-Hut, init 'pca', learning rate 'auto').

    max_iter (>= 250, sklearn's default 1000) includes the 250 early-exaggeration steps; n_jobs only speeds
    up the neighbour search. init "pca" is deterministic given x; "random" starts from a seeded random layout.
    """
    from sklearn.manifold import TSNE

    x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"t-SNE needs vectors of shape (n, C), got {tuple(x.shape)}; use sample_vectors first")
    if not 0 < perplexity < x.shape[0]:
        raise ConfigError(f"perplexity {perplexity} must be positive and below the number of vectors "
                          f"({x.shape[0]}); pick a smaller perplexity or sample more vectors")
    if init not in TSNE_INITS:
        raise ConfigError(f"t-SNE init={init!r} is not one of {TSNE_INITS}")
    if max_iter < 250:
        raise ConfigError(f"t-SNE max_iter={max_iter} is below 250, the early-exaggeration phase; use >= 250 "
                          "(1000 is the default and the paper's setting)")
    tsne = TSNE(n_components=2, perplexity=float(perplexity), max_iter=int(max_iter), init=init,
                learning_rate="auto", random_state=int(seed), n_jobs=n_jobs, verbose=verbose)
    return tsne.fit_transform(_check_finite(x, "the vectors"))


def kde_densities(emb, *, bandwidth: float | str | None = None) -> np.ndarray:
    """scipy's gaussian_kde fitted on the embedding and evaluated at every point (n densities, float64).

    bandwidth None = Scott's rule (scipy's default); a float is scipy's bw_method scalar (the kernel covariance
    is bandwidth^2 times the data covariance); 'scott' or 'silverman' name scipy's rules.
    """
    from scipy.stats import gaussian_kde

    e = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise DataError(f"the KDE needs an embedding of shape (n >= 2, d), got {tuple(e.shape)}")
    if isinstance(bandwidth, (int, float)) and not isinstance(bandwidth, bool) and not bandwidth > 0:
        raise ConfigError(f"KDE bandwidth must be positive (or None for Scott's rule), got {bandwidth}")
    try:
        kde = gaussian_kde(_check_finite(e, "the embedding").T, bw_method=bandwidth)
    except np.linalg.LinAlgError as exc:
        raise DataError(f"the KDE cannot be fitted: the embedding's covariance is singular ({exc}); "
                        "the points are (nearly) collinear, sample more or more varied vectors") from exc
    return kde(e.T)


def _embed_and_score(vectors: np.ndarray, seed: int, perplexity: float, bandwidth, max_iter: int,
                     n_jobs: int | None, init: str = "pca") -> dict:
    """t-SNE, KDE and metrics of already sampled vectors, with the time of each stage."""
    t0 = time.perf_counter()
    emb = embed_tsne(vectors, perplexity=perplexity, seed=seed, max_iter=max_iter, n_jobs=n_jobs, init=init)
    t1 = time.perf_counter()
    dens = kde_densities(emb, bandwidth=bandwidth)
    t2 = time.perf_counter()
    return {"embedding": emb, "densities": dens, **metrics_of(dens), "tsne_seconds": t1 - t0,
            "kde_seconds": t2 - t1}


def single_run(source, *, n: int = 10000, seed: int = 0, perplexity: float = 30.0, bandwidth=None,
               max_iter: int = 1000, n_jobs: int | None = None, init: str = "pca") -> dict:
    """One run: the sampled vectors, their embedding (n x 2), KDE densities, the METRICS values and timings."""
    t0 = time.perf_counter()
    vectors = sample_vectors(source, n, seed=seed)
    result = _embed_and_score(vectors, seed, perplexity, bandwidth, max_iter, n_jobs, init)
    return {"vectors": vectors, **result, "n": int(vectors.shape[0]), "seed": seed, "perplexity": perplexity,
            "bandwidth": bandwidth, "max_iter": max_iter, "init": init, "seconds": time.perf_counter() - t0}


def uniformity_metrics(source, *, n: int = 10000, runs: int = 3, seed: int = 0, perplexity: float = 30.0,
                       bandwidth=None, max_iter: int = 1000, workers: int = 1, progress: bool = False,
                       init: str = "pca", keep_first: bool = False) -> dict:
    """Mean, std (population, ddof=0) and per-run values of every metric in METRICS over seeds.

    Run r uses seed + r for the sampled positions and the t-SNE (and its start with init="random"). workers > 1
    runs seeds in parallel processes (same values, less wall time when cores are free). "n" is the number of
    vectors actually used; "tsne_seconds" each run's t-SNE time. keep_first adds "first": run 0 as a
    single_run-style dict (embedding, densities, its metrics) for plots.plot_tsne_density.
    """
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ConfigError(f"runs must be a positive integer, got {runs!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if init not in TSNE_INITS:
        raise ConfigError(f"t-SNE init={init!r} is not one of {TSNE_INITS}")
    t0 = time.perf_counter()
    seeds = [int(seed) + r for r in range(runs)]
    samples = [sample_vectors(source, n, seed=s) for s in seeds]
    if workers > 1 and runs > 1:
        from joblib import Parallel, delayed

        jobs = (delayed(_embed_and_score)(v, s, perplexity, bandwidth, max_iter, None, init)
                for v, s in zip(samples, seeds))
        results = Parallel(n_jobs=min(workers, runs))(jobs)
    else:
        from tqdm.auto import tqdm

        results = [_embed_and_score(v, s, perplexity, bandwidth, max_iter, None, init)
                   for v, s in tqdm(list(zip(samples, seeds)), desc="uniformity runs", disable=not progress)]
    out: dict = {}
    for key in METRICS:
        values = [float(r[key]) for r in results]
        out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}
    out.update({"n": int(samples[0].shape[0]), "runs": int(runs), "seeds": seeds, "perplexity": perplexity,
                "bandwidth": bandwidth, "max_iter": max_iter, "seconds": time.perf_counter() - t0})
    out["init"] = init
    out["tsne_seconds"] = [float(r["tsne_seconds"]) for r in results]
    if keep_first:
        first = results[0]
        out["first"] = {"embedding": first["embedding"], "densities": first["densities"], "seed": seeds[0],
                        **{k: float(first[k]) for k in METRICS}}
    return out
