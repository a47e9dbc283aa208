"""Analysis figures: t-SNE density scatters, the reconstruction-generation frontier, latent statistics, image grids,
training curves."""
from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from ..data.images import to_uint8
from ..errors import ConfigError, DataError
from .uniformity import METRICS

# Every function builds a bare matplotlib Figure (no pyplot): safe under Agg, no global figure list to leak,
# and Jupyter's inline formatter still renders a returned Figure.


def _enable_notebook_display() -> None:
    """In a Jupyter kernel using the inline backend, load it now: on import it registers the PNG display of Figures."""
    ipython = sys.modules.get("IPython")
    if ipython is None or getattr(ipython.get_ipython(), "kernel", None) is None:
        return
    if "inline" in str(matplotlib.rcParams["backend"]):
        importlib.import_module("matplotlib_inline.backend_inline")


_enable_notebook_display()
_RECON_KEYS = {"rfid": "rFID (lower is better)", "psnr": "PSNR in dB (higher is better)"}


def _numpy(x) -> np.ndarray:
    """A torch tensor or array-like as a numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").float().numpy() if x.is_floating_point() else x.detach().to("cpu").numpy()
    return np.asarray(x)


def hwc_uint8(images) -> np.ndarray:
    """Images (N, C, H, W) or (N, H, W, C) with C in {1, 3}, float in [-1, 1] or uint8 -> (N, H, W, C) uint8 to draw.

    Floats go through `vavae_lab.data.images.to_uint8`, the one [-1, 1] -> uint8 conversion.
    """
    arr = _numpy(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise DataError(f"expected images of shape (N, C, H, W) or (N, H, W, C), got {arr.shape}; "
                        "add a batch dimension with x[None] for a single image")
    if arr.shape[1] in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    elif arr.shape[-1] not in (1, 3):
        raise DataError(f"images of shape {arr.shape} have neither 1 nor 3 channels in dim 1 or in the last dim")
    if np.issubdtype(arr.dtype, np.floating):
        return to_uint8(torch.from_numpy(np.ascontiguousarray(arr))).numpy()
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"integer images must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8)
    raise DataError(f"images of dtype {arr.dtype} are not supported; pass float images in [-1, 1] or uint8")


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
    """Draw one (H, W, C) uint8 image on ax without ticks."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def format_metrics(result: Mapping) -> str:
    """The uniformity metrics of a result as one short line, e.g. 'density 0.263 · Gini 0.145 · H 0.9950'."""
    missing = [k for k in METRICS if k not in result]
    if missing:
        raise DataError(f"a uniformity result needs the keys {tuple(METRICS)}, missing {missing}; "
                        "pass the dict returned by uniformity.single_run")
    return " · ".join(f"{m.short} {float(result[k]):{m.fmt}}" for k, m in METRICS.items())


def plot_tsne_density(results: Mapping[str, Mapping], *, point_size: float = 3.0, panel_size: float = 3.4,
                      cmap: str = "viridis", title: str | None = None) -> Figure:
    """t-SNE scatters side by side, coloured by KDE density / mean density, with the metrics in each title.

    results maps a tokenizer name to a `uniformity.single_run` result (embedding n x 2, densities n, and each
    key of uniformity.METRICS). The figure has one axes per tokenizer plus one shared colour bar.
    """
    if not results:
        raise DataError("plot_tsne_density needs at least one result; pass {name: uniformity.single_run(...)}")
    relative = {}
    for name, res in results.items():
        if "embedding" not in res or "densities" not in res:
            raise DataError(f"result {name!r} lacks 'embedding' or 'densities'; pass uniformity.single_run output "
                            "(uniformity_metrics averages runs and keeps no embedding)")
        dens = _numpy(res["densities"]).astype(np.float64)
        relative[name] = dens / max(float(dens.mean()), 1e-300)
    vmax = max(float(np.percentile(r, 99)) for r in relative.values())
    fig = Figure(figsize=(panel_size * len(results) + 0.8, panel_size + 0.5), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    scatter = None
    for ax, (name, res) in zip(axes, results.items()):
        emb = _numpy(res["embedding"])
        order = np.argsort(relative[name])  # densest points drawn last, on top
        scatter = ax.scatter(emb[order, 0], emb[order, 1], c=relative[name][order], s=point_size, cmap=cmap,
                             vmin=0.0, vmax=vmax, linewidths=0)
        ax.set_title(f"{name}\n{format_metrics(res)}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
    fig.colorbar(scatter, ax=list(axes), label="density / mean density", shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def _recon_value(row: Mapping, recon_key: str) -> float:
    """The reconstruction number of a frontier row: row[recon_key], else row['recon']."""
    if recon_key in row:
        return float(row[recon_key])
    if "recon" in row:
        return float(row["recon"])
    raise DataError(f"frontier row {dict(row)} has neither {recon_key!r} nor 'recon'")


def plot_frontier(rows: Sequence[Mapping], recon_key: str = "rfid", *, title: str | None = None) -> Figure:
    """The reconstruction-generation frontier (paper Fig. 1/2): reconstruction against gFID per latent size d.

    Each row is a dict with d, vf (bool), gfid and the reconstruction number under recon_key ('rfid' or
    'psnr') or 'recon'; an optional name. Points of one VF setting are joined in order of d and labelled
    'd<d>'; an arrow goes from the no-VF to the VF point of each d that has both. A row with gfid_seeds (one
    gFID per DiT seed; gfid is then their mean) also gets each seed as a hollow marker joined by a vertical bar.
    """
    if recon_key not in _RECON_KEYS:
        raise ConfigError(f"recon_key={recon_key!r} is not one of {sorted(_RECON_KEYS)}")
    if not rows:
        raise DataError("plot_frontier needs at least one row: dict(name=..., d=..., vf=..., recon=..., gfid=...)")
    points: dict[bool, dict[int, tuple[float, float]]] = {False: {}, True: {}}
    seeds: dict[bool, dict[int, list[float]]] = {False: {}, True: {}}
    for row in rows:
        missing = [k for k in ("d", "vf", "gfid") if k not in row]
        if missing:
            raise DataError(f"frontier row {dict(row)} misses {missing}; each row needs d, vf, gfid and "
                            f"{recon_key!r} (or 'recon')")
        points[bool(row["vf"])][int(row["d"])] = (_recon_value(row, recon_key), float(row["gfid"]))
        if row.get("gfid_seeds"):
            seeds[bool(row["vf"])][int(row["d"])] = [float(v) for v in row["gfid_seeds"]]
    fig = Figure(figsize=(5.2, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = {False: ("no VF loss", "tab:red", "o"), True: ("VF loss", "tab:blue", "s")}
    for vf, by_d in points.items():
        if not by_d:
            continue
        label, color, marker = styles[vf]
        ds = sorted(by_d)
        xs, ys = [by_d[d][0] for d in ds], [by_d[d][1] for d in ds]
        ax.plot(xs, ys, marker=marker, color=color, label=label, linewidth=1.2)
        for d, x, y in zip(ds, xs, ys):
            ax.annotate(f"d{d}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
            if d in seeds[vf]:
                per_seed = seeds[vf][d]
                ax.plot([x] * len(per_seed), per_seed, linestyle="", marker=marker, markerfacecolor="none",
                        color=color, markersize=5, alpha=0.8)
                ax.vlines(x, min(per_seed), max(per_seed), color=color, alpha=0.4, linewidth=1)
    if any(seeds.values()):
        ax.plot([], [], linestyle="", marker="o", markerfacecolor="none", color="0.4",
                label="each DiT seed (filled: mean)")
    for d in sorted(set(points[False]) & set(points[True])):
        ax.annotate("", xy=points[True][d], xytext=points[False][d],
                    arrowprops=dict(arrowstyle="->", color="0.5", linestyle="--", linewidth=0.9))
    ax.set_xlabel(_RECON_KEYS[recon_key] + (" →" if recon_key == "psnr" else " ←"))
    ax.set_ylabel("gFID (lower is better) ↓")
    ax.set_title(title or "Reconstruction vs. generation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def channel_summary(latents) -> dict[str, torch.Tensor]:
    """Per-channel mean and (unbiased) std of latents N x C x h x w over N, h, w, and the C x C correlation.

    Mean and std are `vavae_lab.latents.stats.channel_moments`, the moments the DiT's normalisation uses
    (float64, without its std floor).
    """
    from ..latents.stats import channel_moments

    z = torch.as_tensor(latents)
    if z.ndim != 4:
        raise DataError(f"channel_summary expects latents (N, C, h, w), got shape {tuple(z.shape)}")
    if z.shape[0] * z.shape[2] * z.shape[3] < 2:
        raise DataError("channel_summary needs at least two values per channel")
    z = z.detach().to("cpu", torch.float64)
    mean, std = channel_moments(lambda idx: z[idx], torch.arange(z.shape[0]))
    flat = z.transpose(0, 1).reshape(z.shape[1], -1)
    return {"mean": mean, "std": std, "corr": torch.corrcoef(flat)}


def plot_channel_stats(latents, *, title: str | None = None) -> Figure:
    """Per-channel mean and std as bars, next to the channel correlation heatmap (3 axes with its colour bar)."""
    stats = channel_summary(latents)
    mean, std, corr = stats["mean"].numpy(), stats["std"].numpy(), stats["corr"].numpy()
    c = mean.shape[0]
    off = corr[~np.eye(c, dtype=bool)] if c > 1 else np.zeros(1)
    fig = Figure(figsize=(max(6.0, 0.25 * c + 5.0), 3.6), layout="constrained")
    ax_bar, ax_corr = fig.subplots(1, 2, width_ratios=[1.4, 1.0])
    idx = np.arange(c)
    ax_bar.bar(idx - 0.2, mean, width=0.4, label="mean", color="tab:blue")
    ax_bar.bar(idx + 0.2, std, width=0.4, label="std", color="tab:orange")
    ax_bar.axhline(0.0, color="0.3", linewidth=0.6)
    ax_bar.set_xlabel("channel")
    ax_bar.set_ylabel("value (normalised latents)")
    ax_bar.set_title(f"mean |mean| {np.abs(mean).mean():.3f} · mean std {std.mean():.3f}", fontsize=9)
    ax_bar.legend(fontsize=8, loc="upper left")
    image = ax_corr.imshow(corr, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax_corr.set_xlabel("channel")
    ax_corr.set_ylabel("channel")
    ax_corr.set_title(f"correlation · mean |off-diag| {np.nanmean(np.abs(off)):.3f}", fontsize=9)
    fig.colorbar(image, ax=ax_corr, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def image_grid(images, nrow: int = 8, titles: Sequence[str] | None = None, *, cell: float = 1.3) -> Figure:
    """Images ([-1, 1] floats or uint8, N x C x H x W) in a grid of nrow per row: one axes per image."""
    arr = hwc_uint8(images)
    n = arr.shape[0]
    if nrow < 1:
        raise ConfigError(f"image_grid: nrow={nrow} must be at least 1")
    if titles is not None and len(titles) != n:
        raise DataError(f"image_grid got {n} images but {len(titles)} titles; pass one title per image")
    cols, rows = min(nrow, n), math.ceil(n / nrow)
    fig = Figure(figsize=(cell * cols, (cell + (0.25 if titles else 0.0)) * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i < n:
            _show(ax, arr[i], None if titles is None else titles[i])
        else:
            fig.delaxes(ax)
    return fig


def plot_reconstructions(images, recons_by_name: Mapping[str, object], *, cell: float = 1.4,
                         title: str | None = None) -> Figure:
    """Inputs in the first row, each tokenizer's reconstructions below, titled with their PSNR in dB."""
    inputs = hwc_uint8(images)
    n = inputs.shape[0]
    recons = {}
    for name, rec in recons_by_name.items():
        recons[name] = hwc_uint8(rec)
        if recons[name].shape != inputs.shape:
            raise DataError(f"reconstructions of {name!r} have shape {recons[name].shape} but the inputs "
                            f"{inputs.shape}; pass one reconstruction per input image")
    fig = Figure(figsize=(cell * n + 0.6, (cell + 0.3) * (1 + len(recons))), layout="constrained")
    axes = fig.subplots(1 + len(recons), n, squeeze=False)
    for j in range(n):
        _show(axes[0, j], inputs[j])
    axes[0, 0].set_ylabel("input", fontsize=9)
    for i, (name, rec) in enumerate(recons.items(), start=1):
        for j in range(n):
            _show(axes[i, j], rec[j], f"PSNR {_psnr_uint8(inputs[j], rec[j]):.1f}")
        axes[i, 0].set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def _psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (range 255), with the MSE floored at 1e-10."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * math.log10(255.0**2 / max(mse, 1e-10))


def interpolate_latents(z0, z1, steps: int, mode: str = "linear") -> torch.Tensor:
    """steps latents from z0 to z1 (both ends included), stacked on a new first dim; slerp treats each as one vector.

    linear: (1 - t) z0 + t z1. slerp: sin((1 - t) w) / sin w * z0 + sin(t w) / sin w * z1 with w the angle
    between the flattened latents (linear where w is tiny); it keeps the norm of unit vectors.
    """
    z0, z1 = torch.as_tensor(z0), torch.as_tensor(z1)
    if z0.shape != z1.shape:
        raise DataError(f"interpolate_latents needs latents of one shape, got {tuple(z0.shape)} and "
                        f"{tuple(z1.shape)}")
    if steps < 2:
        raise ConfigError(f"interpolate_latents: steps={steps} must be at least 2 (the two end points)")
    if mode not in ("linear", "slerp"):
        raise ConfigError(f"interpolate_latents: mode={mode!r} must be 'linear' or 'slerp'")
    a, b = z0.double().flatten(), z1.double().flatten()
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=a.device)[:, None]
    path = (1 - t) * a + t * b
    if mode == "slerp":
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)
        omega = torch.arccos(cos.clamp(-1.0, 1.0))
        if float(torch.sin(omega)) > 1e-6:
            path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    out = path.to(z0.dtype if z0.is_floating_point() else torch.float32).reshape(steps, *z0.shape)
    out[0], out[-1] = z0, z1  # exact end points
    return out


def plot_interpolation(frames, *, ts: Sequence[float] | None = None, cell: float = 1.3) -> Figure:
    """Decoded frames of a latent path (steps x C x H x W in [-1, 1]) in one row, titled with t."""
    arr = hwc_uint8(frames)
    steps = arr.shape[0]
    ts = np.linspace(0.0, 1.0, steps) if ts is None else np.asarray(ts, dtype=float)
    if len(ts) != steps:
        raise DataError(f"plot_interpolation got {steps} frames but {len(ts)} values of t")
    fig = Figure(figsize=(cell * steps, cell + 0.35), layout="constrained")
    axes = fig.subplots(1, steps, squeeze=False)[0]
    for ax, image, t in zip(axes, arr, ts):
        _show(ax, image, f"t={t:.2f}")
    return fig


def plot_latent_channels(image, latent, *, max_channels: int = 32, cell: float = 1.1) -> Figure:
    """One image next to its latent channels (C x h x w) as heatmaps, each on its own symmetric colour scale."""
    z = _numpy(latent)
    if z.ndim == 4 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 3:
        raise DataError(f"plot_latent_channels expects one latent (C, h, w), got shape {z.shape}")
    c = min(z.shape[0], max_channels)
    cols = min(8, c)
    rows = math.ceil(c / cols)
    fig = Figure(figsize=(cell * (cols + 2), cell * rows + 0.5), layout="constrained")
    grid = fig.add_gridspec(rows, cols + 2)
    _show(fig.add_subplot(grid[:, :2]), hwc_uint8(image)[0], "input")
    for k in range(c):
        ax = fig.add_subplot(grid[k // cols, 2 + k % cols])
        lim = max(float(np.abs(z[k]).max()), 1e-8)
        ax.imshow(z[k], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"ch{k} μ{z[k].mean():+.2f} σ{z[k].std():.2f}", fontsize=6)
    if c < z.shape[0]:
        fig.suptitle(f"first {c} of {z.shape[0]} channels", fontsize=9)
    return fig


def plot_curves(curves: Mapping[str, Sequence[Mapping]], key: str, *, title: str, ylabel: str | None = None,
                logy: bool = False) -> Figure:
    """Training curves: for each labelled run, `key` of its logged records (a history's "train" list) by step.

    Runs whose labels share the text before the first comma share a colour (e.g. "f4d32, seed 0" and
    "f4d32, seed 1"); later runs of a group are dashed.
    """
    if not curves:
        raise DataError("plot_curves needs at least one run")
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    colours, seen = {}, {}
    for label, records in curves.items():
        points = [(r["step"], r[key]) for r in records if key in r]
        if not points:
            raise DataError(f"run {label!r} logged no {key!r}; it logged {sorted(records[0]) if records else []}")
        group = label.split(",")[0]
        colours.setdefault(group, f"C{len(colours) % 10}")
        seen[group] = seen.get(group, -1) + 1
        steps, values = zip(*points)
        ax.plot(steps, values, color=colours[group], linestyle=("-", "--", ":", "-.")[seen[group] % 4], label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_convergence(rows: Sequence[Mapping], *, floor: float | None = None, title: str | None = None) -> Figure:
    """gFID against DiT training steps on a log-step axis (paper Fig. 4a/b): one line per tokenizer (colour) and
    DiT seed (line style); `floor` (the real-vs-real FID) as a grey horizontal line. The gFID axis is logarithmic
    when the values span 10x or more (toy curves start in the thousands).

    Each row is one curve, as the study's convergence table gives it: tokenizer (label), seed, steps, gfid_steps.
    """
    if not rows:
        raise DataError("plot_convergence needs at least one row: dict(tokenizer=..., seed=..., steps=[...], "
                        "gfid_steps=[...])")
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    colours: dict[str, str] = {}
    seeds = sorted({r.get("seed", 0) for r in rows})
    ticks: set[int] = set()
    for row in rows:
        missing = [k for k in ("tokenizer", "steps", "gfid_steps") if k not in row]
        if missing or len(row.get("steps", ())) != len(row.get("gfid_steps", ())):
            raise DataError(f"convergence row {dict(row)} needs tokenizer and as many steps as gfid_steps")
        colour = colours.setdefault(row["tokenizer"], f"C{len(colours) % 10}")
        seed = row.get("seed", 0)
        ax.plot(row["steps"], row["gfid_steps"], color=colour, marker="o", markersize=4,
                linestyle=("-", "--", ":", "-.")[seeds.index(seed) % 4], label=f"{row['tokenizer']}, DiT seed {seed}")
        ticks.update(int(s) for s in row["steps"])
    if floor is not None:
        ax.axhline(floor, color="0.5", linewidth=1, label=f"real vs real (floor) {floor:.2f}")
    _finish_gfid_axes(ax, "DiT training steps", title or "Convergence: gFID against DiT training steps")
    values = [g for row in rows for g in row["gfid_steps"] if g > 0] + ([floor] if floor and floor > 0 else [])
    if values and max(values) >= 10 * min(values):  # early gFIDs in the thousands would flatten the end
        ax.set_yscale("log")
        ax.set_ylabel("gFID (lower is better, log scale) ↓")
    ax.set_xticks(sorted(ticks), [str(s) for s in sorted(ticks)])
    ax.minorticks_off()
    return fig


def _finish_gfid_axes(ax, xlabel: str, title: str) -> None:
    """The Fig. 4 panels' shared look: log x axis named `xlabel`, gFID on y, title, grid, legend."""
    ax.set_xscale("log")
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("gFID (lower is better) ↓")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_scaling(rows: Sequence[Mapping], *, title: str | None = None) -> Figure:
    """gFID against DiT parameters on a log axis (paper Fig. 4c): one line per tokenizer through the seed means
    (filled markers), each DiT seed as a hollow marker, the DiT size written beside each mean.

    Each row is one tokenizer at one DiT size, as the study's scaling table gives it: tokenizer (label), size,
    params, gfid and optionally gfid_seeds.
    """
    if not rows:
        raise DataError("plot_scaling needs at least one row: dict(tokenizer=..., size=..., params=..., gfid=...)")
    for row in rows:
        missing = [k for k in ("tokenizer", "size", "params", "gfid") if k not in row]
        if missing:
            raise DataError(f"scaling row {dict(row)} lacks {', '.join(missing)}")
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, label in enumerate(dict.fromkeys(r["tokenizer"] for r in rows)):
        mine = sorted((r for r in rows if r["tokenizer"] == label), key=lambda r: r["params"])
        x, y = [r["params"] for r in mine], [r["gfid"] for r in mine]
        ax.plot(x, y, color=f"C{i % 10}", marker="o", label=f"{label} (mean of the DiT seeds)")
        for r in mine:
            seeds = r.get("gfid_seeds") or []
            ax.scatter([r["params"]] * len(seeds), seeds, facecolors="none", edgecolors=f"C{i % 10}", s=28)
            ax.annotate(str(r["size"]), (r["params"], r["gfid"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    _finish_gfid_axes(ax, "DiT parameters", title or "DiT size at a fixed step budget: gFID per tokenizer")
    return fig
