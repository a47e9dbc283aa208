"""The latent-to-features fit and the PCA colour maps behind notebook 02's alignment cell."""
import pytest
import torch
from matplotlib.figure import Figure

from vavae_lab.analysis.alignment import linear_r2, pca_rgb, plot_alignment
from vavae_lab.errors import DataError


def test_r2_is_one_for_features_the_latent_holds_linearly_and_near_zero_for_unrelated_ones():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, 4, 4, generator=g)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    f = torch.einsum("dc,bchw->bdhw", a, z) + b[None, :, None, None]
    assert linear_r2(z, f) == pytest.approx(1.0, abs=1e-6)
    noisy = f + 0.5 * torch.randn(f.shape, generator=g) * f.std()
    assert 0.5 < linear_r2(z, noisy) < 1.0
    assert abs(linear_r2(z, torch.randn(64, 6, 4, 4, generator=g))) < 0.05  # 1,024 positions, 5 parameters each
    with pytest.raises(DataError, match="share batch and grid"):
        linear_r2(z, f[:, :, :2])


def test_pca_colour_maps_are_rgb_in_the_unit_range_and_follow_the_main_direction():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, 4).view(1, 1, 1, 4).expand(8, 1, 4, 4)
    grid = torch.cat([5 * ramp, 0.01 * torch.randn(8, 5, 4, 4, generator=g)], dim=1)
    rgb = pca_rgb(grid)
    assert rgb.shape == (8, 3, 4, 4) and rgb.min() >= 0 and rgb.max() <= 1
    first = rgb[:, 0]
    assert torch.all((first[..., -1] - first[..., 0]).abs() > 0.9)  # the first component runs along the ramp
    assert pca_rgb(torch.randn(2, 2, 3, 3, generator=g)).shape == (2, 3, 3, 3)  # fewer than 3 channels
    fig = plot_alignment(torch.zeros(3, 3, 8, 8), {"latent": grid[:3], "features": grid[:3]}, title="maps")
    assert isinstance(fig, Figure) and len(fig.axes) == 9 and fig.get_suptitle() == "maps"


def test_maps_in_the_references_colours_match_where_the_latent_holds_the_features():
    from vavae_lab.analysis.alignment import projected

    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 4, 4, 4, generator=g)
    f = torch.einsum("dc,bchw->bdhw", torch.randn(6, 4, generator=g), z)
    assert torch.allclose(projected(z, f), f, atol=1e-4)
    same = pca_rgb(projected(z, f), reference=f)
    assert torch.allclose(same, pca_rgb(f), atol=1e-4)
    unrelated = pca_rgb(projected(torch.randn(16, 4, 4, 4, generator=g), f), reference=f)
    assert (unrelated - pca_rgb(f)).abs().mean() > 0.1
