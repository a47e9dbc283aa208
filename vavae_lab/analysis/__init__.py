"""Analysis of latents and tokenizers: uniformity metrics, proxies, figures and interactive views."""
from .curves import plot_convergence, plot_curves, plot_frontier, plot_scaling
from .plots import (
    channel_summary, image_grid, interpolate_latents, plot_channel_stats, plot_interpolation, plot_latent_channels,
    plot_reconstructions, plot_tsne_density,
)
from .uniformity import (
    density_cv, embed_tsne, gini, kde_densities, load_source, normalized_entropy, sample_vectors, single_run,
    uniformity_metrics,
)
from .widgets import (
    TokenizerViews, UniformityExplorerState, channel_viewer, has_frontend, interpolation_viewer,
    reconstruction_viewer, uniformity_explorer,
)
