"""Interactive latent views (ipywidgets) over small state objects, with static figures when no front end is attached."""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from ..data.images import from_uint8
from ..errors import ConfigError, DataError
from . import plots

DEFAULT_BANDWIDTHS: tuple = (None, 0.1, 0.2, 0.3, 0.5)


def has_frontend() -> bool:
    """True when widgets can render: ipywidgets importable, an IPython kernel, and a known front end (or env).

    VAVAE_LAB_STATIC=1 forces static figures, VAVAE_LAB_STATIC=0 forces widgets in any kernel. Otherwise a
    kernel counts as attached to a front end when Jupyter server (JPY_SESSION_NAME), VS Code (VSCODE_PID) or
    Colab started it; plain `python`, nbval and nbconvert runs have no such marker and get static figures.
    """
    flag = os.environ.get("VAVAE_LAB_STATIC", "").strip()
    if flag not in ("", "0"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    if flag == "0":
        return True
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID") or "google.colab" in sys.modules)


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """A figure rendered to PNG bytes (what the widgets show in an ipywidgets.Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def as_images(images) -> torch.Tensor:
    """Images N x C x H x W as float in [-1, 1]: float tensors pass through, uint8 is rescaled."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise DataError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}; for a dataset pass "
                        "dataset.get_batch(range(k))[0]")
    if x.dtype == torch.uint8:
        return from_uint8(x)
    if not x.is_floating_point():
        raise DataError(f"images of dtype {x.dtype} are not supported; pass float images in [-1, 1] or uint8")
    return x.float()


def _model_device(model: torch.nn.Module, device) -> torch.device:
    """The device to run on: the given one (the model is moved there) or the model's own."""
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    return device


@torch.no_grad()
def encode_images(tokenizer, images, *, device=None, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """The posterior modes `tokenizer.encode(x).mode()` of all images, in batches, returned on the CPU."""
    x = as_images(images)
    dev, was_training = _model_device(tokenizer, device), tokenizer.training
    tokenizer.eval()
    try:
        parts = [tokenizer.encode(x[i:i + batch_size].to(dev)).mode().cpu()
                 for i in tqdm(range(0, x.shape[0], batch_size), desc="encode", disable=not progress, leave=False)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(tokenizer, latents: torch.Tensor, *, device=None, batch_size: int = 64) -> torch.Tensor:
    """Images in [-1, 1] decoded from latents N x C x h x w, in batches, returned on the CPU."""
    dev, was_training = _model_device(tokenizer, device), tokenizer.training
    tokenizer.eval()
    try:
        parts = [tokenizer.decode(latents[i:i + batch_size].to(dev)).cpu()
                 for i in range(0, latents.shape[0], batch_size)]
    finally:
        tokenizer.train(was_training)
    return torch.cat(parts)


class UniformityExplorerState:
    """The uniformity explorer's model: t-SNE cached per (tokenizer, perplexity), the KDE re-run per bandwidth."""

    def __init__(self, sources: Mapping, *, n: int = 2000, perplexities: Sequence[float] = (10, 30, 50),
                 bandwidths: Sequence = DEFAULT_BANDWIDTHS, seed: int = 0):
        from . import uniformity

        if not sources:
            raise DataError("uniformity explorer needs at least one source: {name: LatentDataset or tensor}")
        if not perplexities or not bandwidths:
            raise ConfigError("uniformity explorer needs at least one perplexity and one bandwidth")
        self.perplexities, self.bandwidths, self.seed = tuple(perplexities), tuple(bandwidths), seed
        self.vectors = {name: uniformity.sample_vectors(src, n, seed=seed) for name, src in sources.items()}
        self.embeddings: dict[tuple[str, float], np.ndarray] = {}
        self.tokenizer = next(iter(self.vectors))
        self.perplexity = 30 if 30 in self.perplexities else self.perplexities[0]
        self.bandwidth = self.bandwidths[0]
        self.result: dict = {}

    def embedding(self, name: str, perplexity: float) -> np.ndarray:
        """The t-SNE embedding of one tokenizer's vectors at one perplexity, computed once and cached."""
        from . import uniformity

        key = (name, perplexity)
        if key not in self.embeddings:
            self.embeddings[key] = np.asarray(uniformity.embed_tsne(self.vectors[name], perplexity=perplexity,
                                                                    seed=self.seed))
        return self.embeddings[key]

    def precompute(self, perplexities: Sequence[float] | None = None, *, progress: bool = True) -> None:
        """Fill the embedding cache for every tokenizer at the given perplexities (all by default), with a bar."""
        pairs = [(name, p) for name in self.vectors for p in (perplexities or self.perplexities)]
        for name, p in tqdm(pairs, desc="t-SNE", disable=not progress):
            self.embedding(name, p)

    def _check(self, tokenizer, perplexity, bandwidth) -> None:
        """Raise ConfigError for a tokenizer, perplexity or bandwidth the explorer does not offer."""
        for what, value, allowed in (("tokenizer", tokenizer, tuple(self.vectors)),
                                     ("perplexity", perplexity, self.perplexities),
                                     ("bandwidth", bandwidth, self.bandwidths)):
            if value not in allowed:
                raise ConfigError(f"uniformity explorer: {what}={value!r} is not one of {allowed}")

    def run(self, tokenizer: str, perplexity: float, bandwidth) -> dict:
        """A single_run-style result (embedding, densities and each metric of uniformity.METRICS) for one setting."""
        from . import uniformity

        self._check(tokenizer, perplexity, bandwidth)
        emb = self.embedding(tokenizer, perplexity)
        dens = np.asarray(uniformity.kde_densities(emb, bandwidth=bandwidth))
        return {"embedding": emb, "densities": dens, **uniformity.metrics_of(dens)}

    def update(self, *, tokenizer: str | None = None, perplexity: float | None = None, bandwidth=...) -> dict:
        """Change any of the three settings, recompute (t-SNE only if not cached) and return the result dict."""
        self.tokenizer = self.tokenizer if tokenizer is None else tokenizer
        self.perplexity = self.perplexity if perplexity is None else perplexity
        self.bandwidth = self.bandwidth if bandwidth is ... else bandwidth
        self.result = self.run(self.tokenizer, self.perplexity, self.bandwidth)
        return self.result

    def metrics(self) -> dict[str, float]:
        """The uniformity metrics (uniformity.METRICS) of the current setting."""
        from .uniformity import METRICS

        res = self.result or self.update()
        return {k: res[k] for k in METRICS}

    def figure(self, compare: bool = False) -> Figure:
        """The scatter of the current tokenizer, or of every tokenizer side by side when compare=True."""
        names = list(self.vectors) if compare else [self.tokenizer]
        results = {name: (self.result if name == self.tokenizer and self.result else
                          self.run(name, self.perplexity, self.bandwidth)) for name in names}
        fig = plots.plot_tsne_density(results)
        counts = sorted({len(v) for v in self.vectors.values()})
        fig.suptitle(f"{' / '.join(map(str, counts))} vectors per latent · perplexity {self.perplexity} · KDE "
                     f"bandwidth {_bandwidth_label(self.bandwidth)}", fontsize=9)
        return fig


def _bandwidth_label(bandwidth) -> str:
    """'Scott' for the KDE's default bandwidth rule (Scott's), else the number."""
    return "Scott" if bandwidth is None else f"{bandwidth:g}"


def _image_widget(fig: Figure):
    """An ipywidgets.Image showing a figure."""
    import ipywidgets as w

    return w.Image(value=figure_png(fig), format="png")


def uniformity_explorer(sources: Mapping, *, n: int = 2000, perplexities: Sequence[float] = (10, 30, 50),
                        bandwidths: Sequence = DEFAULT_BANDWIDTHS, seed: int = 0, progress: bool = True):
    """Pick a tokenizer, perplexity and KDE bandwidth and watch the t-SNE scatter and the metrics update.

    Returns an ipywidgets VBox (with `.state`) when a front end is attached; otherwise the static figure of
    every tokenizer at the default setting (only those embeddings are computed).
    """
    state = UniformityExplorerState(sources, n=n, perplexities=perplexities, bandwidths=bandwidths, seed=seed)
    if not has_frontend():
        state.precompute([state.perplexity], progress=progress)
        state.update()
        return state.figure(compare=True)
    import ipywidgets as w

    state.precompute([state.perplexity], progress=progress)  # other perplexities on first use (seconds each)
    state.update()
    pick = w.Dropdown(options=list(state.vectors), value=state.tokenizer, description="tokenizer")
    perp = w.SelectionSlider(options=list(state.perplexities), value=state.perplexity, description="perplexity")
    by_label = {_bandwidth_label(b): b for b in state.bandwidths}  # None (auto) cannot be a slider value
    band = w.SelectionSlider(options=list(by_label), value=_bandwidth_label(state.bandwidth), description="bandwidth")
    label = w.HTML(plots.format_metrics(state.result))
    image = _image_widget(state.figure())

    def refresh(_change=None):
        state.update(tokenizer=pick.value, perplexity=perp.value, bandwidth=by_label[band.value])
        label.value = plots.format_metrics(state.result)
        image.value = figure_png(state.figure())

    for control in (pick, perp, band):
        control.observe(refresh, names="value")
    box = w.VBox([w.HBox([pick, perp, band]), label, image])
    box.state, box.controls = state, {"tokenizer": pick, "perplexity": perp, "bandwidth": band, "metrics": label}
    return box


class TokenizerViews:
    """Images with their latents under one or more tokenizers, encoded once, for the channel/recon/interp views."""

    def __init__(self, tokenizers: Mapping, images, *, device=None, batch_size: int = 64, progress: bool = True):
        if not tokenizers:
            raise DataError("pass at least one tokenizer: {name: AutoencoderKL}")
        self.tokenizers, self.device, self.batch_size = dict(tokenizers), device, batch_size
        self.images = as_images(images)
        self.latents = {name: encode_images(model, self.images, device=device, batch_size=batch_size)
                        for name, model in tqdm(self.tokenizers.items(), desc="encode", disable=not progress)}
        self._recons: dict[str, torch.Tensor] = {}

    def _index(self, i: int) -> int:
        """Check an image index and return it."""
        if not 0 <= i < self.images.shape[0]:
            raise DataError(f"image index {i} is out of range for {self.images.shape[0]} images")
        return i

    def reconstructions(self, name: str) -> torch.Tensor:
        """All images decoded from their latents by tokenizer name (computed once)."""
        if name not in self._recons:
            self._recons[name] = decode_latents(self.tokenizers[name], self.latents[name], device=self.device,
                                                batch_size=self.batch_size)
        return self._recons[name]

    def channel_figure(self, index: int, name: str | None = None) -> Figure:
        """One image next to its latent channels under a tokenizer (the first by default)."""
        name = name or next(iter(self.tokenizers))
        i = self._index(index)
        return plots.plot_latent_channels(self.images[i], self.latents[name][i], name=name)

    def reconstruction_figure(self, start: int = 0, count: int = 4) -> Figure:
        """Images start..start+count-1 and every tokenizer's reconstructions of them."""
        stop = min(self._index(start) + count, self.images.shape[0])
        return plots.plot_reconstructions(self.images[start:stop],
                                          {name: self.reconstructions(name)[start:stop] for name in self.tokenizers},
                                          title="held-out images (top) decoded from each tokenizer's latent")

    def interpolation_frames(self, i: int, j: int, steps: int = 8, mode: str = "linear",
                             name: str | None = None) -> torch.Tensor:
        """Decoded images along the latent path from image i to image j (steps x C x H x W in [-1, 1])."""
        name = name or next(iter(self.tokenizers))
        z = self.latents[name]
        path = plots.interpolate_latents(z[self._index(i)], z[self._index(j)], steps, mode)
        return decode_latents(self.tokenizers[name], path, device=self.device, batch_size=self.batch_size)

    def interpolation_figure(self, i: int, j: int, steps: int = 8, mode: str = "linear") -> Figure:
        """The decoded interpolation from image i to image j as one row of frames."""
        return plots.plot_interpolation(self.interpolation_frames(i, j, steps, mode),
                                        title=f"{next(iter(self.tokenizers))}: decoded along the {mode} path from "
                                              f"image {i}'s latent (t = 0) to image {j}'s (t = 1)")


def _slider(n: int, description: str, value: int = 0):
    """An integer slider over image indices 0..n-1."""
    import ipywidgets as w

    return w.IntSlider(value=value, min=0, max=max(n - 1, 0), description=description, continuous_update=False)


def _attach(views: TokenizerViews, controls: dict, draw) -> object:
    """A VBox of the controls above an image that `draw()` refreshes whenever a control's value changes."""
    import ipywidgets as w

    image = _image_widget(draw())

    def refresh(_change=None):
        image.value = figure_png(draw())

    for control in controls.values():
        control.observe(refresh, names="value")
    box = w.VBox([w.HBox(list(controls.values())), image])
    box.state, box.controls, box.image = views, controls, image
    return box


def channel_viewer(tokenizer, images, *, name: str = "tokenizer", device=None, progress: bool = True):
    """Latent channels of a chosen image under a tokenizer called `name`: a slider picks the image (static: 0)."""
    views = TokenizerViews({name: tokenizer}, images, device=device, progress=progress)
    if not has_frontend():
        return views.channel_figure(0)
    index = _slider(views.images.shape[0], "image")
    return _attach(views, {"image": index}, lambda: views.channel_figure(index.value))


def reconstruction_viewer(tokenizers: Mapping, images, *, count: int = 4, device=None, progress: bool = True):
    """Inputs and every tokenizer's reconstructions, count images per page, with PSNR (static: the first page)."""
    views = TokenizerViews(tokenizers, images, device=device, progress=progress)
    for name in tqdm(views.tokenizers, desc="decode", disable=not progress):
        views.reconstructions(name)
    if not has_frontend():
        return views.reconstruction_figure(0, count)
    start = _slider(views.images.shape[0], "first image")
    return _attach(views, {"start": start}, lambda: views.reconstruction_figure(start.value, count))


def interpolation_viewer(tokenizer, images, *, name: str = "tokenizer", steps: int = 8, device=None,
                         progress: bool = True):
    """Decoded latent interpolation between two chosen images under a tokenizer called `name`, linear or slerp
    (static: images 0 and 1)."""
    interactive = has_frontend()
    views = TokenizerViews({name: tokenizer}, images, device=device, progress=progress)
    n = views.images.shape[0]
    if not interactive:
        return views.interpolation_figure(0, min(1, n - 1), steps)
    import ipywidgets as w

    controls = {"a": _slider(n, "image a"), "b": _slider(n, "image b", min(1, n - 1)),
                "steps": w.IntSlider(value=steps, min=3, max=16, description="steps", continuous_update=False),
                "mode": w.ToggleButtons(options=["linear", "slerp"], value="linear")}
    return _attach(views, controls, lambda: views.interpolation_figure(
        controls["a"].value, controls["b"].value, controls["steps"].value, controls["mode"].value))
