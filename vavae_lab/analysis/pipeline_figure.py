"""The latent diffusion pipeline in one picture (notebook 00): image -> encoder -> latent -> normalise -> DiT -> decoder."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch


def plot_pipeline(resolution: int, f: int, d: int) -> Figure:
    """Boxes and arrows for a tokenizer of downsampling `f` and `d` latent channels on `resolution`-pixel images,
    with each stage's shape and how many numbers it keeps."""
    h = resolution // f
    pixels, latent = 3 * resolution * resolution, d * h * h
    stages = [
        ("image x", f"3 x {resolution} x {resolution}\n{pixels:,} numbers"),
        ("encoder E", f"downsamples {f}x\n(the tokenizer)"),
        ("latent z", f"{d} x {h} x {h}\n{latent:,} numbers\n({pixels / latent:.0f}x fewer)"),
        ("normalise", "(z - mean) / std\nper channel"),
        ("DiT", "noise -> latent\nof class y\n(a flow, t: 0 -> 1)"),
        ("decoder D", "latent -> image\n(the tokenizer)"),
    ]
    fig = Figure(figsize=(13, 2.4))
    ax = fig.add_subplot()
    ax.set_xlim(0, len(stages) * 2.2)
    ax.set_ylim(0, 2)
    ax.axis("off")
    for i, (name, text) in enumerate(stages):
        x = i * 2.2 + 0.1
        colour = "#dbe9f6" if name in ("encoder E", "decoder D") else "#fde8c8" if name == "DiT" else "#eeeeee"
        ax.add_patch(FancyBboxPatch((x, 0.3), 1.8, 1.4, boxstyle="round,pad=0.05", facecolor=colour,
                                    edgecolor="#555555"))
        ax.text(x + 0.9, 1.35, name, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 0.9, 0.8, text, ha="center", va="center", fontsize=8)
        if i < len(stages) - 1:
            ax.annotate("", xy=(x + 2.15, 1.0), xytext=(x + 1.85, 1.0), arrowprops={"arrowstyle": "->"})
    fig.suptitle(f"training: x -> E -> z -> normalise -> the DiT learns to make such latents; sampling: noise -> DiT "
                 f"-> de-normalise -> D -> image (f{f}d{d}, {resolution} px)", fontsize=9)
    return fig
