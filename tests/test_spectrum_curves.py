"""The latent spectrum and participation ratio, and the training-curve plot."""
from __future__ import annotations

import pytest
import torch

from vavae_lab.analysis.curves import plot_curves
from vavae_lab.analysis.spectrum import latent_spectrum, participation_ratio
from vavae_lab.errors import DataError


def test_isotropic_latents_use_every_direction_and_a_line_uses_one():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(400, 8, 4, 4, generator=g)
    s = latent_spectrum(iso)
    assert s.shape == (8,) and float(s.sum()) == pytest.approx(1.0, abs=1e-5)
    assert bool((s[:-1] >= s[1:]).all())
    assert 7.5 < participation_ratio(s) <= 8.0
    line = torch.randn(400, 1, 4, 4, generator=g) * torch.linspace(1, 2, 8).view(1, 8, 1, 1)
    assert participation_ratio(latent_spectrum(line)) == pytest.approx(1.0, abs=1e-4)


def test_participation_ratio_counts_equal_shares():
    assert participation_ratio(torch.tensor([0.5, 0.5, 0.0, 0.0])) == pytest.approx(2.0)
    assert participation_ratio(torch.full((5,), 0.2)) == pytest.approx(5.0)


def test_spectrum_refuses_a_wrong_shape():
    with pytest.raises(DataError, match="N x d x h x w"):
        latent_spectrum(torch.zeros(3, 4))


def test_curves_plot_one_line_per_run_and_name_a_missing_key():
    runs = {"f4d4, seed 0": [{"step": 1, "rec": 0.3}, {"step": 2, "rec": 0.2}],
            "f4d4, seed 1": [{"step": 1, "rec": 0.31}, {"step": 2, "rec": 0.22}],
            "f4d32, seed 0": [{"step": 1, "rec": 0.25}, {"step": 2, "rec": 0.1}]}
    fig = plot_curves(runs, "rec", title="t")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert lines[1].get_linestyle() == "--" and fig.axes[0].get_title() == "t"
    long = "lab: the VF term's weight w = w_hyper x w_adaptive (tokenizer seed 0)"
    title = plot_curves(runs, "rec", title=long).axes[0].get_title()
    assert title.replace("\n", " ") == long and max(len(part) for part in title.split("\n")) <= 60  # fits the axes
    with pytest.raises(DataError, match="logged no 'loss'"):
        plot_curves(runs, "loss", title="t")
