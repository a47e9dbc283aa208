"""The download helper against a local HTTP server: hash check, atomic replace, interrupted transfers, offline mode."""
import hashlib
import http.server
import threading

import pytest

from vavae_lab.download import OFFICIAL_FILES, download, official_file
from vavae_lab.errors import ConfigError, WeightsUnavailableError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
GOOD = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/missing":
            self.send_error(404)
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


def test_registry_points_at_the_released_repositories():
    assert set(OFFICIAL_FILES) == {"vavae-imagenet256-f16d32-dinov2.pt", "lightningdit-xl-imagenet256-64ep.pt",
                                   "lightningdit-xl-imagenet256-800ep.pt", "latents_stats.pt"}
    for name, entry in OFFICIAL_FILES.items():
        assert entry.url.startswith("https://huggingface.co/hustvl/") and entry.url.endswith("/resolve/main/" + name)
