"""Table 6 on the paper's demo latents: the one-line message without them, the cached measurement, notebook 03's cells.

The real files (hustvl/LightningDiT tools/latent_demos, 10,000 x 32 each) are never fetched here: a small
stand-in tensor plays them (tests/test_download.py serves one over a local http server).
"""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from vavae_lab.errors import ConfigError, DataError, WeightsUnavailableError
from vavae_lab.study import paper_latents as PL
from vavae_lab.study.report import show_table

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_latent_uniformity.ipynb"
PERPLEXITY = 10  # suits the 150 stand-in vectors


@pytest.fixture
def no_files(tmp_path, monkeypatch):
    """Offline, with an empty weights folder: the situation of CI."""
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))  # its weights/ is searched too: keep it empty
    monkeypatch.setenv("VAVAE_LAB_WEIGHTS", str(tmp_path / "weights"))
    return tmp_path / "weights"


def _stand_in(path: Path, seed: int, scale: float = 1.0) -> Path:
    """A (150, 32) tensor file: a Gaussian blob, `scale` stretching half of the channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(150, 32, generator=g)
    x[:, :16] *= scale
    torch.save(x, path)
    return path


def test_offline_without_the_files_says_in_one_line_what_to_fetch_and_where(no_files):
    with pytest.raises(WeightsUnavailableError) as err:
        PL.paper_latent_files()
    msg = str(err.value)
    assert "\n" not in msg and "VAVAE_LAB_OFFLINE=1" in msg and str(no_files) in msg
    assert "https://raw.githubusercontent.com/hustvl/LightningDiT/main/tools/latent_demos/ " in msg
    assert all(name in msg for name, _ in PL.PAPER_LATENTS.values()) and "MIT" in msg


def test_a_tensor_of_the_wrong_shape_is_refused_in_one_line(tmp_path):
    torch.save(torch.zeros(10, 31), tmp_path / "a.pt")
    with pytest.raises(DataError, match=r"holds \(10, 31\), not the \(N, 32\)") as err:
        PL.load_paper_latents(tmp_path / "a.pt")
    assert "\n" not in str(err.value)
    torch.save(torch.zeros(2, 32, 4, 4), tmp_path / "maps.pt")
    with pytest.raises(DataError, match="expected \\(N, C\\) latent vectors"):
        PL.file_uniformity(tmp_path / "maps.pt", runs=1)
    with pytest.raises(ConfigError, match="init"):
        PL.file_uniformity(tmp_path / "a.pt", init="spectral")


def test_file_uniformity_varies_the_start_per_run_and_is_cached_by_sha256(tmp_path):
    path = _stand_in(tmp_path / "z.pt", 0)
    kw = dict(n=150, runs=2, perplexity=PERPLEXITY, root=tmp_path / "cache")
    r1 = PL.file_uniformity(path, **kw)
    assert not r1["cached"] and r1["n"] == 150 and r1["init"] == "random" and len(r1["tsne_seconds"]) == 2
    for key in PL.TOLERANCE:
        assert r1[key]["values"][0] != r1[key]["values"][1]  # a random start per run: the runs differ
    assert r1["first"]["embedding"].shape == (150, 2) and r1["first"]["density"] == r1["density"]["values"][0]
    r2 = PL.file_uniformity(path, **kw)
    assert r2["cached"] and r2["density"] == r1["density"] and r2["file_sha256"] == r1["file_sha256"]
    np.testing.assert_array_equal(r2["first"]["embedding"], r1["first"]["embedding"])
    _stand_in(path, 1)  # same name, other content: another key, computed afresh
    assert not PL.file_uniformity(path, **kw)["cached"]


def test_table_and_reading_against_the_toy_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))
    paths = {"f16d32": _stand_in(tmp_path / "a.pt", 0, scale=3.0), "VA-VAE f16d32": _stand_in(tmp_path / "b.pt", 1)}
    rows = PL.table6_paper_latents(paths, n=150, runs=2)
    assert [r["tokenizer"] for r in rows] == list(paths) and rows[0]["paper_density"] == 0.263
    assert rows[1]["paper_gini"] == 0.096 and isinstance(rows[0]["within"], bool) and rows[0]["runs"] == 2
    text = str(getattr(show_table(rows, PL.COLUMNS), "data", show_table(rows, PL.COLUMNS)))
    assert "| f16d32 |" in text and "0.263" in text
    toy = [{"name": "d32", "density": 0.26, "density_std": 0.01, "gini": 0.15, "gini_std": 0.0, "entropy": 0.996,
            "entropy_std": 0.001},
           {"name": "d32_vf", "density": 0.24, "density_std": 0.01, "gini": 0.16, "gini_std": 0.0, "entropy": 0.998,
            "entropy_std": 0.001}]
    read = {r["metric"]: r for r in PL.read_against(toy, rows)}
    assert read["density CV"]["toy_spreads"] == pytest.approx(-2.0) and read["density CV"]["toy_more_uniform"]
    assert read["Gini"]["toy_spreads"] is None and not read["Gini"]["toy_more_uniform"]
    assert read["entropy"]["toy_more_uniform"]
    with pytest.raises(DataError, match="toy with VF"):
        PL.read_against(toy[:1], rows)
    f8 = [{**toy[0], "name": "d16"}, {**toy[1], "name": "d16_vf"}]  # the f8 ladder's top rung reads the same
    assert PL.read_against(f8, rows) == PL.read_against(toy, rows)


def test_notebook03_section_degrades_to_one_line_without_the_files(no_files):
    """The tagged cells of notebook 03, run offline without the files: one printed line, then nothing."""
    import nbformat

    cells = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if "paper-latents" in c.metadata.get("tags", ())]
    assert len(cells) >= 3 and all(c.cell_type == "code" for c in cells)
    shown = []
    namespace = {"PRESET": "smoke", "show_table": show_table, "display": shown.append, "t6": []}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in cells:
            exec(compile(cell.source, "<notebook 03>", "exec"), namespace)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "latents_cache_f16d32_vfdinov2.pt" in lines[0] and str(no_files) in lines[0]
    assert lines[0].endswith("going on with the toy latents") and shown == [] and namespace["paper_files"] == {}
