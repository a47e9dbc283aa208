"""The download helper against a local HTTP server: hash check, atomic replace, interrupted transfers, offline mode."""
import hashlib
import http.server
import io
import threading

import pytest
import torch

from vavae_lab.download import OFFICIAL_FILES, OfficialFile, download, official_file
from vavae_lab.errors import ConfigError, WeightsUnavailableError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
GOOD = hashlib.sha256(PAYLOAD).hexdigest()


def _tensor_bytes(x: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(x, buffer)
    return buffer.getvalue()


# a small stand-in for the paper's demo latents (the real files are 10,000 x 32; never fetched by the tests)
STAND_IN = _tensor_bytes(torch.randn(120, 32, generator=torch.Generator().manual_seed(0)))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/missing":
            self.send_error(404)
            return
        if self.path.startswith("/latent_demos/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(STAND_IN)))
            self.end_headers()
            self.wfile.write(STAND_IN)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        # /cut sends half the announced body, then closes the connection
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2] if self.path == "/cut" else PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("VAVAE_LAB_OFFLINE", raising=False)


def test_download_checks_the_hash_and_skips_a_good_file(server, tmp_path, capsys):
    dest = download(f"{server}/file.pt", tmp_path / "w" / "file.pt", GOOD, progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "w" / "file.pt.partial").exists()
    assert f"{server}/file.pt" in capsys.readouterr().out  # the URL is printed
    mtime = dest.stat().st_mtime_ns
    assert download(f"{server}/missing", dest, GOOD, progress=False) == dest  # no request made
    assert dest.stat().st_mtime_ns == mtime


def test_unpinned_download_prints_the_hash_to_pin(server, tmp_path, capsys):
    download(f"{server}/file.pt", tmp_path / "f.pt", progress=False)
    assert f"sha256='{GOOD}'" in capsys.readouterr().out


def test_hash_mismatch_keeps_the_old_file(server, tmp_path):
    dest = tmp_path / "file.pt"
    dest.write_bytes(b"old but valid to its owner")
    with pytest.raises(WeightsUnavailableError, match="expected 0+.*is kept"):
        download(f"{server}/file.pt", dest, "0" * 64, progress=False)
    assert dest.read_bytes() == b"old but valid to its owner"
    assert list(tmp_path.iterdir()) == [dest]


def test_stale_file_is_replaced_by_a_verified_download(server, tmp_path):
    dest = tmp_path / "file.pt"
    dest.write_bytes(b"truncated")
    download(f"{server}/file.pt", dest, GOOD, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_leaves_nothing_behind(server, tmp_path):
    with pytest.raises(WeightsUnavailableError):
        download(f"{server}/cut", tmp_path / "file.pt", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_expected_size_is_enforced(server, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="got 1048576 of 5 bytes"):
        download(f"{server}/file.pt", tmp_path / "file.pt", expected_size=5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_unreachable_host_name_where_to_put_the_file(server, tmp_path):
    with pytest.raises(WeightsUnavailableError, match=f"place it at {tmp_path / 'a.pt'}"):
        download(f"{server}/missing", tmp_path / "a.pt", progress=False)
    with pytest.raises(WeightsUnavailableError, match="network error"):
        download("http://127.0.0.1:9/nothing", tmp_path / "b.pt", progress=False, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_offline_env_var_refuses(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="VAVAE_LAB_OFFLINE"):
        download(f"{server}/file.pt", tmp_path / "file.pt", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_official_file_prefers_local_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")
    monkeypatch.setenv("VAVAE_LAB_WEIGHTS", str(tmp_path))
    (tmp_path / "latents_stats.pt").write_bytes(b"x")
    assert official_file("latents_stats.pt") == tmp_path / "latents_stats.pt"
    with pytest.raises(WeightsUnavailableError, match="lightningdit-xl-imagenet256-800ep.pt"):
        official_file("lightningdit-xl-imagenet256-800ep.pt")
    with pytest.raises(ConfigError, match="unknown official file"):
        official_file("vavae.pt")


DEMOS = ("latents_cache_f16d32.pt", "latents_cache_f16d32_vfdinov2.pt")


def test_registry_points_at_the_released_repositories():
    weights = {"vavae-imagenet256-f16d32-dinov2.pt", "lightningdit-xl-imagenet256-64ep.pt",
               "lightningdit-xl-imagenet256-800ep.pt", "latents_stats.pt"}
    assert set(OFFICIAL_FILES) == weights | set(DEMOS)
    for name in weights:
        entry = OFFICIAL_FILES[name]
        assert entry.url.startswith("https://huggingface.co/hustvl/") and entry.url.endswith("/resolve/main/" + name)
    for name in DEMOS:  # the paper's Table 6 latents: the official repository's raw files, pinned
        entry = OFFICIAL_FILES[name]
        assert entry.url == f"https://raw.githubusercontent.com/hustvl/LightningDiT/main/tools/latent_demos/{name}"
        assert len(entry.sha256) == 64 and entry.size == 1_281_022 and "MIT" in entry.description


@pytest.fixture
def demos_on(server, monkeypatch):
    """OFFICIAL_FILES with the two demo latent files served by the local server as the stand-in tensor."""
    sha = hashlib.sha256(STAND_IN).hexdigest()
    for name in DEMOS:
        monkeypatch.setitem(OFFICIAL_FILES, name, OfficialFile(f"{server}/latent_demos/{name}", "stand-in", sha,
                                                               len(STAND_IN)))
    return OFFICIAL_FILES


def test_demo_latents_download_on_demand_hash_checked_then_load(demos_on, tmp_path, monkeypatch, capsys):
    from vavae_lab.study.paper_latents import PAPER_LATENTS, load_paper_latents, paper_latent_files

    monkeypatch.setenv("VAVAE_LAB_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "data"))  # its weights/ is searched too: keep it empty
    paths = paper_latent_files()
    assert set(paths) == set(PAPER_LATENTS) and {p.name for p in paths.values()} == set(DEMOS)
    assert all(p.parent == tmp_path and p.read_bytes() == STAND_IN for p in paths.values())
    assert "/latent_demos/latents_cache_f16d32.pt" in capsys.readouterr().out  # the URL is printed
    assert tuple(load_paper_latents(paths["f16d32"]).shape) == (120, 32)
    monkeypatch.setenv("VAVAE_LAB_OFFLINE", "1")  # now local: found without a request
    assert paper_latent_files() == paths


def test_demo_latents_with_the_wrong_size_or_hash_are_refused(demos_on, tmp_path, monkeypatch):
    from vavae_lab.errors import DataError
    from vavae_lab.study.paper_latents import paper_latent_files

    name = DEMOS[0]
    monkeypatch.setitem(OFFICIAL_FILES, name, OfficialFile(demos_on[name].url, "x", demos_on[name].sha256, 99))
    with pytest.raises(WeightsUnavailableError, match=f"{DEMOS[0]}.*{tmp_path}"):
        paper_latent_files(tmp_path)
    assert not (tmp_path / name).exists()
    (tmp_path / name).write_bytes(b"someone else's file")  # a local copy is checked too
    with pytest.raises(DataError, match="is not the published latents_cache_f16d32.pt") as err:
        paper_latent_files(tmp_path)
    assert "\n" not in str(err.value)
