"""The latent diffusion pipeline in one picture (notebook 00): how the DiT is trained, and how it samples."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

_COLOURS = {"tokenizer": "#dbe9f6", "dit": "#fde8c8", "data": "#eeeeee"}


def pipeline_rows(resolution: int, f: int, d: int) -> dict[str, list[tuple[str, str, str]]]:
    """The two rows of the picture, each a list of (name, text, kind): training (image -> E -> z -> normalise -> the
    DiT's loss) and sampling (noise -> DiT -> de-normalise -> D -> image), with each stage's shape."""
    h = resolution // f
    pixels, latent = 3 * resolution * resolution, d * h * h
    shape = f"{d} x {h} x {h}"
    training = [
        ("image x", f"3 x {resolution} x {resolution}\n{pixels:,} numbers", "data"),
        ("encoder E", f"downsamples {f}x\n(the tokenizer)", "tokenizer"),
        ("latent z", f"{shape}\n{latent:,} numbers\n({pixels / latent:.0f}x fewer)", "data"),
        ("normalise", "(z - mean) / std\nper channel, over\nthe training latents", "data"),
        ("DiT learns", "the velocity from\nnoise to z at a\nrandom t, given y", "dit"),
    ]
    sampling = [
        ("noise + class y", f"{shape}\nGaussian", "data"),
        ("DiT samples", "follows its velocity\nt: 0 -> 1\n(Euler / Heun steps)", "dit"),
        ("de-normalise", "z * std + mean\n(the same mean, std)", "data"),
        ("decoder D", "latent -> image\n(the tokenizer)", "tokenizer"),
        ("image", f"3 x {resolution} x {resolution}", "data"),
    ]
    return {"training": training, "sampling": sampling}


def plot_pipeline(resolution: int, f: int, d: int) -> Figure:
    """Boxes and arrows, one row for training and one for sampling, for a tokenizer of downsampling `f` and `d`
    latent channels on `resolution`-pixel images, with each stage's shape and how many numbers it keeps."""
    rows = pipeline_rows(resolution, f, d)
    width = max(len(r) for r in rows.values())
    fig = Figure(figsize=(12, 4.4))
    ax = fig.add_subplot()
    ax.set_xlim(-1.4, width * 2.2 - 0.2)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    for r, (label, stages) in enumerate(rows.items()):
        y0 = 2.3 - 2.1 * r
        ax.text(-1.3, y0 + 0.7, label, ha="left", va="center", fontsize=11, weight="bold", style="italic")
        for i, (name, text, kind) in enumerate(stages):
            x = i * 2.2 + 0.1
            ax.add_patch(FancyBboxPatch((x, y0), 1.8, 1.4, boxstyle="round,pad=0.05", facecolor=_COLOURS[kind],
                                        edgecolor="#555555"))
            ax.text(x + 0.9, y0 + 1.1, name, ha="center", va="center", fontsize=10, weight="bold")
            ax.text(x + 0.9, y0 + 0.5, text, ha="center", va="center", fontsize=8)
            if i < len(stages) - 1:
                ax.annotate("", xy=(x + 2.15, y0 + 0.7), xytext=(x + 1.85, y0 + 0.7), arrowprops={"arrowstyle": "->"})
    fig.suptitle(f"the latent diffusion pipeline (f{f}d{d}, {resolution} px): the DiT is trained on normalised "
                 "latents, so its samples are de-normalised before the decoder", fontsize=10)
    return fig
