"""Analysis figures: t-SNE density scatters, latent statistics, image grids, reconstructions, interpolations
(the curves over d, steps and DiT size are in curves.py)."""
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


def enable_notebook_display() -> None:
    """In a Jupyter kernel using the inline backend, load it now: on import it registers the PNG display of Figures."""
    ipython = sys.modules.get("IPython")
    if ipython is None or getattr(ipython.get_ipython(), "kernel", None) is None:
        return
    if "inline" in str(matplotlib.rcParams["backend"]):
        importlib.import_module("matplotlib_inline.backend_inline")


enable_notebook_display()


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
    """The uniformity metrics of a result as one short line, e.g. 'density CV 0.263 · Gini 0.145 · entropy 0.9950'."""
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


def channel_summary(latents) -> dict[str, torch.Tensor]:
    """Per-channel mean and (unbiased) std of latents N x C x h x w over N, h, w, the C x C correlation, its
    eigenvalues (descending; they sum to C) and the effective rank (sum l)^2 / sum l^2 (C: uncorrelated channels, 1:
    one direction).

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
    corr = torch.corrcoef(flat)
    eig = torch.linalg.eigvalsh(torch.nan_to_num(corr)).flip(0).clamp_min(0.0)
    return {"mean": mean, "std": std, "corr": corr, "eigenvalues": eig,
            "effective_rank": eig.sum() ** 2 / (eig ** 2).sum().clamp_min(1e-300)}


def plot_channel_stats(latents, *, title: str | None = None) -> Figure:
    """How the channels of one or more latents (a tensor, or name -> tensor) share the work: the eigenvalues of
    their channel correlation (one curve each, effective rank in the legend) beside each correlation heatmap."""
    named = latents if isinstance(latents, Mapping) else {"latents": latents}
    stats = {name: channel_summary(z) for name, z in named.items()}
    fig = Figure(figsize=(3.6 * (1 + len(stats)), 3.4), layout="constrained")
    axes = fig.subplots(1, 1 + len(stats), width_ratios=[1.3] + [1.0] * len(stats))
    for k, (name, st) in enumerate(stats.items()):
        eig = st["eigenvalues"].numpy()
        axes[0].plot(np.arange(1, len(eig) + 1), eig, marker="o", markersize=3, color=f"C{k}",
                     label=f"{name} (effective rank {float(st['effective_rank']):.1f} of {len(eig)})")
        corr = st["corr"].numpy()
        c = corr.shape[0]
        off = corr[~np.eye(c, dtype=bool)] if c > 1 else np.zeros(1)
        image = axes[1 + k].imshow(corr, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        axes[1 + k].set_xlabel("channel")
        axes[1 + k].set_ylabel("channel")
        axes[1 + k].set_title(f"{name}: correlation\nmean |off-diagonal| {np.nanmean(np.abs(off)):.3f}", fontsize=9)
    fig.colorbar(image, ax=axes[1:].tolist(), shrink=0.85)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("eigenvalue rank")
    axes[0].set_ylabel("eigenvalue of the channel correlation")
    axes[0].set_title("how many directions the channels use", fontsize=9)
    axes[0].legend(fontsize=7)
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
    """Inputs in the first row, each tokenizer's reconstructions below, each with its PSNR in dB underneath."""
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
            _show(axes[i, j], rec[j])
            axes[i, j].set_xlabel(f"PSNR {_psnr_uint8(inputs[j], rec[j]):.1f} dB", fontsize=8)  # under its image
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


def plot_interpolation(frames, *, ts: Sequence[float] | None = None, cell: float = 1.3,
                       title: str | None = None) -> Figure:
    """Decoded frames of a latent path (steps x C x H x W in [-1, 1]) in one row, titled with t."""
    arr = hwc_uint8(frames)
    steps = arr.shape[0]
    ts = np.linspace(0.0, 1.0, steps) if ts is None else np.asarray(ts, dtype=float)
    if len(ts) != steps:
        raise DataError(f"plot_interpolation got {steps} frames but {len(ts)} values of t")
    fig = Figure(figsize=(cell * steps, cell + 0.35 + (0.3 if title else 0.0)), layout="constrained")
    axes = fig.subplots(1, steps, squeeze=False)[0]
    for ax, image, t in zip(axes, arr, ts):
        _show(ax, image, f"t={t:.2f}")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_latent_channels(image, latent, *, max_channels: int = 32, cell: float = 1.35,
                         name: str | None = None) -> Figure:
    """One image next to its latent channels (C x h x w) as heatmaps, each on its own symmetric colour scale; `name`
    (the tokenizer's) opens the title."""
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
        ax.set_title(f"ch{k} μ{z[k].mean():+.2f} σ{z[k].std():.2f}", fontsize=8)
    shown = f"the first {c} of {z.shape[0]}" if c < z.shape[0] else f"all {c}"
    who = f"{name}: " if name else ""
    fig.suptitle(f"{who}one image's latent, {shown} channels ({z.shape[1]} x {z.shape[2]} grid; each on its own "
                 "scale, blue < 0 < red)", fontsize=9)
    return fig


