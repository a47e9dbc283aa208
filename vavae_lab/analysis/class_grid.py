"""Samples beside real images of the class they were asked for: one labelled row per class."""
from __future__ import annotations

from typing import Sequence

import torch
from matplotlib.figure import Figure

from ..errors import DataError
from .plots import hwc_uint8


def _first_of_class(labels: torch.Tensor, k: int, count: int, what: str, name: str) -> list[int]:
    """Indices of the first `count` images of class k (DataError naming the class when there are fewer)."""
    idx = torch.nonzero(torch.as_tensor(labels) == k).flatten()[:count].tolist()
    if len(idx) < count:
        raise DataError(f"plot_class_grid: {what} hold {len(idx)} image(s) of class {name!r}, the grid shows "
                        f"{count}; pass more images or a smaller per_class")
    return idx


def plot_class_grid(samples, sample_labels, real, real_labels, class_names: Sequence[str], *, per_class: int = 4,
                    predicted=None, cell: float = 0.9, title: str | None = None) -> Figure:
    """One row per class: `per_class` real images of it, then `per_class` samples generated for it.

    `predicted` (one class per sample, e.g. the toy classifier's) frames each sample green when it is named as the
    class asked for and red when not, so the grid shows what the samples' class accuracy counts.
    """
    samples_hwc, real_hwc = hwc_uint8(samples), hwc_uint8(real)
    sample_labels, real_labels = torch.as_tensor(sample_labels), torch.as_tensor(real_labels)
    if len(sample_labels) != len(samples_hwc) or len(real_labels) != len(real_hwc):
        raise DataError("plot_class_grid: pass one label per sample and one per real image")
    if predicted is not None and len(predicted) != len(samples_hwc):
        raise DataError(f"plot_class_grid: {len(predicted)} predicted classes for {len(samples_hwc)} samples")
    rows, cols = len(class_names), 2 * per_class + 1
    fig = Figure(figsize=(cell * cols + 1.2, cell * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, name in enumerate(class_names):
        reals = _first_of_class(real_labels, k, per_class, "the real images", name)
        fakes = _first_of_class(sample_labels, k, per_class, "the samples", name)
        for j, ax in enumerate(axes[k]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j == per_class:  # the gap between real images and samples
                ax.axis("off")
                continue
            is_real = j < per_class
            i = reals[j] if is_real else fakes[j - per_class - 1]
            # nearest: each pixel a block, as image_grid draws it (smoothed, notebook 01's grids were ~2.6x larger)
            ax.imshow(real_hwc[i] if is_real else samples_hwc[i], interpolation="nearest")
            if not is_real and predicted is not None:
                colour = "tab:green" if int(predicted[i]) == k else "tab:red"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
            if j == 0:
                ax.set_ylabel(name.replace("_", " "), rotation=0, ha="right", va="center", fontsize=8)
            if k == 0 and j in (0, per_class + 1):
                ax.set_title("real" if is_real else "samples", fontsize=9, loc="left")
    fig.suptitle(title or "samples beside real images of the class they were asked for")
    return fig

