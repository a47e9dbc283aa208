"""Analysis figures and widget views: formulas, figure layout, t-SNE caching, static fallback and slider updates."""
import importlib
import math
import sys
import types

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vavae_lab.analysis import curves, plots, widgets  # noqa: E402
from vavae_lab.analysis.uniformity import METRICS  # noqa: E402
from vavae_lab.errors import ConfigError, DataError  # noqa: E402
from vavae_lab.tokenizer.autoencoder import AutoencoderKL  # noqa: E402


def _standin_uniformity() -> types.ModuleType:
    """A minimal stand-in with the uniformity API, used only while the real module is absent."""
    from scipy.stats import gaussian_kde

    mod = types.ModuleType("vavae_lab.analysis.uniformity")

    def sample_vectors(source, n, *, seed):
        z = torch.as_tensor(source).float()
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, z.shape[0], (n,), generator=g)
        v = z[idx, :, 0, 0]
        return ((v - v.mean(0)) / v.std(0)).numpy()

    def embed_tsne(x, *, perplexity, seed):
        from sklearn.manifold import TSNE
        return TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)

    def kde_densities(emb, *, bandwidth):
        return gaussian_kde(emb.T, bw_method=bandwidth)(emb.T)

    def gini(p):
        p = np.sort(p)
        k = np.arange(1, len(p) + 1)
        return float(np.sum((2 * k - len(p) - 1) * p) / (len(p) * p.sum()))

    mod.sample_vectors, mod.embed_tsne, mod.kde_densities, mod.gini = sample_vectors, embed_tsne, kde_densities, gini
    mod.density_cv = lambda p: float(np.std(p) / np.mean(p))
    mod.normalized_entropy = lambda p: float(-np.sum(p / p.sum() * np.log2(p / p.sum())) / np.log2(len(p)))
    return mod


@pytest.fixture
def uniformity(monkeypatch):
    """The real uniformity module when it exists, else the stand-in, with embed_tsne wrapped to count calls."""
    import vavae_lab.analysis as pkg
    try:
        mod = importlib.import_module("vavae_lab.analysis.uniformity")
    except ModuleNotFoundError:
        mod = _standin_uniformity()
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
        monkeypatch.setattr(pkg, "uniformity", mod, raising=False)
    calls = []
    real = mod.embed_tsne

    def counting(x, *, perplexity, seed):
        calls.append(perplexity)
        return real(x, perplexity=perplexity, seed=seed)

    monkeypatch.setattr(mod, "embed_tsne", counting)
    mod.calls = calls
    return mod


@pytest.fixture
def sources():
    """Two tiny latent sets with different structure (N x C x h x w)."""
    g = torch.Generator().manual_seed(0)
    clustered = torch.randn(60, 4, 2, 2, generator=g) * 0.2 + torch.randint(0, 3, (60, 1, 1, 1), generator=g) * 3.0
    return {"d4": torch.randn(60, 4, 2, 2, generator=g), "d4+clusters": clustered}


@pytest.fixture
def tokenizer():
    torch.manual_seed(0)
    return AutoencoderKL(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4, embed_dim=4,
                         resolution=16, norm_groups=8)


@pytest.fixture
def images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _result(density, gini, entropy, n=50, seed=0):
    rng = np.random.default_rng(seed)
    return {"embedding": rng.normal(size=(n, 2)), "densities": rng.uniform(0.5, 1.5, n),
            **{k: 0.5 for k in METRICS}, "density": density, "gini": gini, "entropy": entropy}


def test_tsne_density_one_panel_per_tokenizer_with_metrics_in_titles():
    fig = plots.plot_tsne_density({"f16d32": _result(0.263, 0.145, 0.995), "VA-VAE": _result(0.178, 0.096, 0.998)})
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # two scatters and the shared colour bar
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert "f16d32" in titles[0] and "0.263" in titles[0] and "0.145" in titles[0] and "0.9950" in titles[0]
    assert "VA-VAE" in titles[1] and "0.178" in titles[1] and "0.096" in titles[1]
    assert fig._suptitle is None
    titled = plots.plot_tsne_density({"f16d32": _result(0.263, 0.145, 0.995)}, title="paper latents")
    assert titled._suptitle.get_text() == "paper latents"
    with pytest.raises(DataError, match="embedding"):
        plots.plot_tsne_density({"x": {"density": 1.0, "gini": 0.1, "entropy": 0.9}})


def test_frontier_series_labels_and_axis_directions():
    rows = [dict(name=f"d{d}{'-vf' if vf else ''}", d=d, vf=vf, rfid=1.0 / d + 0.1 * vf, gfid=d / (2 if vf else 1))
            for d in (16, 32, 64) for vf in (False, True)]
    fig = curves.plot_frontier(rows)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2
    assert "lower is better" in ax.get_xlabel() and "lower is better" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.texts]
    assert sorted(labels) == sorted(["", "", "", "d16", "d16", "d32", "d32", "d64", "d64"])  # 3 arrows
    no_vf = next(line for line in ax.get_lines() if line.get_label() == "no VF loss")
    np.testing.assert_allclose(no_vf.get_ydata(), [16, 32, 64])  # joined in order of d
    runs = [dict(d=4, vf=False, rfid=1.5, rfid_runs=[1.5, 1.5, 2.5, 2.5], gfid=3.0, gfid_seeds=[2.8, 3.0, 3.1, 3.1])]
    marks = [line for line in curves.plot_frontier(runs).axes[0].get_lines() if line.get_markerfacecolor() == "none"]
    assert sorted((float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in marks if len(m.get_xdata())) == [
        (1.5, 2.8), (1.5, 3.0), (2.5, 3.1), (2.5, 3.1)]  # each run at its own tokenizer's rFID
    filled = next(line for line in curves.plot_frontier(runs).axes[0].get_lines() if line.get_label() == "no VF loss")
    assert float(filled.get_xdata()[0]) == 2.0  # the mean over the runs' tokenizers, not one seed's
    tagged = [dict(d=d, vf=False, rfid=1.0, rfid_runs=[x, x, 3.0, 3.0], gfid=2.5, gfid_seeds=[y, y, 3.5, 3.5],
                   run_labels=["t1", "", "t0", ""]) for d, x, y in ((4, 1.63, 2.21), (8, 1.68, 2.21))]
    texts = [t.get_text() for t in curves.plot_frontier(tagged).axes[0].texts if " t" in t.get_text()]
    assert sorted(texts) == ["d4 t0, d8 t0", "d4 t1, d8 t1"]  # markers 0.05 apart (and 0) share a label
    apart = [{**r, "rfid_runs": [1.0 + r["d"] / 4] * 2 + [3.0] * 2} for r in tagged]  # 1.0 apart: one tag each
    assert sum(" t1" in t.get_text() for t in curves.plot_frontier(apart).axes[0].texts) == 2
    psnr_rows = [dict(d=16, vf=False, recon=24.0, gfid=30.0)]
    assert "higher is better" in curves.plot_frontier(psnr_rows, recon_key="psnr").axes[0].get_xlabel()
    with pytest.raises(ConfigError, match="recon_key"):
        curves.plot_frontier(rows, recon_key="ssim")
    with pytest.raises(DataError, match="gfid"):
        curves.plot_frontier([dict(d=16, vf=False, rfid=1.0)])


def test_channel_stats_match_torch_formulas():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, 4, 4, generator=g)
    z[:, 2] = -2.0 * z[:, 0] + 1.0  # perfectly anti-correlated with channel 0
    stats = plots.channel_summary(z)
    torch.testing.assert_close(stats["mean"], z.double().mean(dim=(0, 2, 3)))
    flat1 = z[:, 1].double().flatten()
    assert math.isclose(float(stats["std"][1]), math.sqrt(((flat1 - flat1.mean()) ** 2).sum() / (flat1.numel() - 1)))
    a, b = z[:, 0].double().flatten(), z[:, 1].double().flatten()
    r = ((a - a.mean()) * (b - b.mean())).sum() / math.sqrt(((a - a.mean()) ** 2).sum() * ((b - b.mean()) ** 2).sum())
    assert math.isclose(float(stats["corr"][0, 1]), float(r), rel_tol=1e-9)
    assert math.isclose(float(stats["corr"][0, 2]), -1.0, abs_tol=1e-9)
    eig = stats["eigenvalues"]
    torch.testing.assert_close(eig.sum(), torch.tensor(3.0, dtype=torch.float64))  # a correlation's trace is C
    assert bool((eig[:-1] >= eig[1:]).all()) and float(eig[-1]) < 1e-9  # descending; channel 2 adds no direction
    assert math.isclose(float(stats["effective_rank"]), float(eig.sum() ** 2 / (eig ** 2).sum()))
    white = plots.channel_summary(torch.randn(400, 4, 4, 4, generator=g))["effective_rank"]
    assert 3.8 < float(white) <= 4.0 and 1.0 <= float(stats["effective_rank"]) < 2.1  # independent vs collinear
    fig = plots.plot_channel_stats({"a": z, "b": z.flip(1)})
    assert len(fig.axes) == 4  # the spectra, two heatmaps, one colour bar
    assert f"{float(stats['effective_rank']):.1f} of 3" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert len(plots.plot_channel_stats(z).axes) == 3
    with pytest.raises(DataError, match=r"\(N, C, h, w\)"):
        plots.channel_summary(torch.zeros(3, 4, 4))


def test_image_grid_and_uint8_conversion():
    floats = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(5, 3, 2, 3)
    assert plots.hwc_uint8(floats)[0, 0, :, 0].tolist() == [0, 128, 255]
    as_uint8 = plots.hwc_uint8(floats).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(plots.hwc_uint8(as_uint8), plots.hwc_uint8(floats))
    fig = plots.image_grid(floats, nrow=3, titles=list("abcde"))
    assert len(fig.axes) == 5 and [ax.get_title() for ax in fig.axes] == list("abcde")
    with pytest.raises(DataError, match="titles"):
        plots.image_grid(floats, titles=["a"])


def test_class_grid_puts_samples_beside_real_images_of_their_class():
    from vavae_lab.analysis.class_grid import plot_class_grid

    real = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    real[:, 0] = torch.arange(6).view(6, 1, 1) * 40  # each real image's red channel names it
    real_labels = torch.tensor([0, 1, 2, 0, 1, 2])
    samples = torch.full((4, 3, 4, 4), 255, dtype=torch.uint8)
    labels, predicted = torch.tensor([2, 1, 0, 1]), torch.tensor([2, 0, 0, 1])
    fig = plot_class_grid(samples, labels, real, real_labels, ["a", "b_c", "d"], per_class=1, predicted=predicted)
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b c", "d"]
    assert axes[1, 0].images[0].get_array()[0, 0, 0] == 40  # class b's first real image is image 1
    # class b's sample (index 1) was named class 0: framed red; class a's (index 2) green
    assert axes[1, 2].spines["left"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("tab:red")
    assert axes[0, 2].spines["left"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("tab:green")
    assert not axes[0, 1].axison  # the gap
    with pytest.raises(DataError, match=r"the samples hold 1 image\(s\) of class 'a', the grid shows 2"):
        plot_class_grid(samples, labels, real, real_labels, ["a", "b_c", "d"], per_class=2)


def test_reconstructions_grid_and_psnr_titles():
    inputs = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    fig = plots.plot_reconstructions(inputs, {"A": inputs + 10, "B": inputs})
    assert len(fig.axes) == 3 * 2
    # MSE 100 on the 0..255 scale -> 10 log10(255^2 / 100) = 28.13 dB
    assert fig.axes[2].get_xlabel() == "PSNR 28.1 dB" and not fig.axes[2].get_title()  # under its image
    assert fig.axes[2].get_ylabel() == "A"
    assert plots.plot_reconstructions(inputs, {"A": inputs}, title="lab")._suptitle.get_text() == "lab"
    with pytest.raises(DataError, match="one reconstruction per input"):
        plots.plot_reconstructions(inputs, {"A": inputs[:1]})


def test_interpolation_endpoints_linear_midpoint_and_slerp_norms():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 2, 2, generator=g), torch.randn(4, 2, 2, generator=g)
    for mode in ("linear", "slerp"):
        path = plots.interpolate_latents(z0, z1, 5, mode)
        assert path.shape == (5, 4, 2, 2)
        assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    torch.testing.assert_close(plots.interpolate_latents(z0, z1, 3)[1], (z0 + z1) / 2)
    a, b = z0 / z0.norm(), z1 / z1.norm()
    norms = plots.interpolate_latents(a, b, 7, "slerp").flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(7))
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(plots.interpolate_latents(e0, e1, 3, "slerp")[1], torch.full((2,), 0.5**0.5))
    with pytest.raises(ConfigError, match="steps"):
        plots.interpolate_latents(z0, z1, 1)
    with pytest.raises(ConfigError, match="mode"):
        plots.interpolate_latents(z0, z1, 3, "cubic")
    fig = plots.plot_interpolation(torch.zeros(4, 3, 8, 8))
    assert [ax.get_title() for ax in fig.axes] == ["t=0.00", "t=0.33", "t=0.67", "t=1.00"]


def test_explorer_state_caches_tsne_and_reruns_only_kde(uniformity, sources):
    state = widgets.UniformityExplorerState(sources, n=40, perplexities=(5, 10), bandwidths=(None, 0.5), seed=0)
    first = state.update()
    assert state.perplexity == 5 and len(uniformity.calls) == 1
    second = state.update(bandwidth=0.5)
    assert len(uniformity.calls) == 1  # bandwidth only re-runs the KDE
    assert not np.allclose(first["densities"], second["densities"])
    assert second["embedding"] is first["embedding"]
    state.update(perplexity=10)
    assert uniformity.calls == [5, 10]
    state.update(perplexity=5)
    state.update(tokenizer="d4+clusters")
    assert uniformity.calls == [5, 10, 5]
    assert set(state.metrics()) == set(METRICS)
    with pytest.raises(ConfigError, match="perplexity"):
        state.update(perplexity=7)


def test_has_frontend_rules(monkeypatch):
    import IPython

    monkeypatch.delenv("VAVAE_LAB_STATIC", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    assert widgets.has_frontend() is False  # plain python: no kernel
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=object()))
    assert widgets.has_frontend() is False  # a kernel with no known front end (nbval, nbconvert)
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/05_uniformity.ipynb")
    assert widgets.has_frontend() is True
    monkeypatch.setenv("VAVAE_LAB_STATIC", "1")
    assert widgets.has_frontend() is False
    monkeypatch.delenv("JPY_SESSION_NAME")
    monkeypatch.setenv("VAVAE_LAB_STATIC", "0")
    assert widgets.has_frontend() is True


def test_static_fallback_returns_figures(monkeypatch, uniformity, sources, tokenizer, images):
    monkeypatch.setattr(widgets, "has_frontend", lambda: False)
    fig = widgets.uniformity_explorer(sources, n=40, perplexities=(5, 10), seed=0, progress=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert uniformity.calls == [5, 5]  # only the default view's embeddings
    channels = widgets.channel_viewer(tokenizer, images, name="f8d16", progress=False)
    assert isinstance(channels, Figure) and channels._suptitle.get_text().startswith("f8d16: one image's latent")
    recon = widgets.reconstruction_viewer({"a": tokenizer, "b": tokenizer}, images, count=2, progress=False)
    assert isinstance(recon, Figure) and len(recon.axes) == 3 * 2
    interp = widgets.interpolation_viewer(tokenizer, images, name="f8d16", steps=4, progress=False)
    assert isinstance(interp, Figure) and len(interp.axes) == 4
    assert interp._suptitle.get_text().startswith("f8d16: decoded along the linear path from image 0's latent")


def test_tokenizer_views_encode_and_interpolate(tokenizer, images):
    views = widgets.TokenizerViews({"t": tokenizer}, images, progress=False)
    with torch.no_grad():
        z = tokenizer.encode(images).mode()
    torch.testing.assert_close(views.latents["t"], z)
    frames = views.interpolation_frames(0, 2, steps=3)
    assert frames.shape == (3, 3, 16, 16) and frames.abs().max() <= 1.0
    with torch.no_grad():
        torch.testing.assert_close(frames[0], tokenizer.decode(z[:1])[0])
    with pytest.raises(DataError, match="out of range"):
        views.channel_figure(3)


def test_widgets_update_on_slider_change(monkeypatch, uniformity, sources, tokenizer, images):
    import ipywidgets

    monkeypatch.setattr(widgets, "has_frontend", lambda: True)
    box = widgets.uniformity_explorer(sources, n=40, perplexities=(5, 10), bandwidths=(None, 0.2), progress=False)
    assert isinstance(box, ipywidgets.VBox)
    assert uniformity.calls == [5, 5]  # only the default perplexity up front, for each tokenizer
    label = box.controls["metrics"].value
    box.controls["bandwidth"].value = "0.2"
    assert box.state.bandwidth == 0.2 and box.controls["metrics"].value != label
    box.controls["tokenizer"].value = "d4+clusters"
    box.controls["perplexity"].value = 10
    assert box.state.result["embedding"] is box.state.embeddings[("d4+clusters", 10)]
    assert uniformity.calls == [5, 5, 10]  # another perplexity is embedded on first use ...
    box.controls["perplexity"].value = 5
    box.controls["perplexity"].value = 10
    assert uniformity.calls == [5, 5, 10]  # ... and then cached
    viewer = widgets.channel_viewer(tokenizer, images, progress=False)
    before = viewer.image.value
    viewer.controls["image"].value = 2
    assert viewer.image.value != before
    interp = widgets.interpolation_viewer(tokenizer, images, steps=3, progress=False)
    before = interp.image.value
    interp.controls["steps"].value = 5
    assert interp.image.value != before
    recon = widgets.reconstruction_viewer({"a": tokenizer}, images, count=1, progress=False)
    before = recon.image.value
    recon.controls["start"].value = 1
    assert recon.image.value != before


def test_the_pipeline_picture_names_each_stage_with_its_shape():
    from vavae_lab.analysis.pipeline_figure import plot_pipeline

    fig = plot_pipeline(32, 8, 16)
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_text()]  # the arrows are empty annotations
    names = [t.get_text() for t in fig.axes[0].texts if t.get_fontweight() == "bold" and t.get_fontsize() == 10]
    assert names == ["image x", "encoder E", "latent z", "normalise", "DiT learns",
                     "noise + class y", "DiT samples", "de-normalise", "decoder D", "image"]
    assert "16 x 4 x 4\n256 numbers\n(12x fewer)" in texts and "3 x 32 x 32\n3,072 numbers" in texts
    assert "training" in texts and "sampling" in texts  # the two rows, each labelled
    assert "f8d16, 32 px" in fig._suptitle.get_text() and "de-normalised" in fig._suptitle.get_text()


def test_latent_channels_draws_each_channel_beside_the_image():
    image = torch.zeros(3, 8, 8)
    fig = plots.plot_latent_channels(image, torch.randn(1, 4, 2, 2))
    assert len(fig.axes) == 1 + 4 and "all 4 channels (2 x 2 grid" in fig._suptitle.get_text()
    assert fig.axes[1].get_title().startswith("ch0 ")
    many = plots.plot_latent_channels(image, torch.randn(40, 2, 2))
    assert len(many.axes) == 1 + 32 and "the first 32 of 40 channels" in many._suptitle.get_text()
    with pytest.raises(DataError, match=r"one latent \(C, h, w\)"):
        plots.plot_latent_channels(image, torch.randn(2, 4, 2, 2))
