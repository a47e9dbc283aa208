"""The one download helper (hash-checked, atomic, offline-aware) and the registry of the official released files."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, WeightsUnavailableError
from .paths import env_on, env_switch

CHUNK = 1 << 20


@dataclass(frozen=True)
class OfficialFile:
    """A released artifact of the paper: where it is published and what it holds."""

    url: str
    description: str
    sha256: str | None = None  # None: not pinned yet; download() prints the hash it computed
    size: int | None = None  # bytes, when pinned: a transfer of another length is refused


_HF = "https://huggingface.co/hustvl"
_GITHUB = "https://raw.githubusercontent.com/hustvl/LightningDiT/main"  # the official code; default branch main
OFFICIAL_FILES: dict[str, OfficialFile] = {
    "vavae-imagenet256-f16d32-dinov2.pt": OfficialFile(
        f"{_HF}/vavae-imagenet256-f16d32-dinov2/resolve/main/vavae-imagenet256-f16d32-dinov2.pt",
        "VA-VAE f16d32 tokenizer aligned to DINOv2, the last of three stages (docs/paper.md §3, §8)"),
    "lightningdit-xl-imagenet256-64ep.pt": OfficialFile(
        f"{_HF}/lightningdit-xl-imagenet256-64ep/resolve/main/lightningdit-xl-imagenet256-64ep.pt",
        "LightningDiT-XL/1, 64 epochs: FID-50k 2.11 with CFG (docs/paper.md §6)"),
    "lightningdit-xl-imagenet256-800ep.pt": OfficialFile(
        f"{_HF}/lightningdit-xl-imagenet256-800ep/resolve/main/lightningdit-xl-imagenet256-800ep.pt",
        "LightningDiT-XL/1, 800 epochs: FID-50k 1.35 with CFG (docs/paper.md §6)"),
    "latents_stats.pt": OfficialFile(
        f"{_HF}/vavae-imagenet256-f16d32-dinov2/resolve/main/latents_stats.pt",
        "channel mean/std of the VA-VAE f16d32 latents, shape 1 x 32 x 1 x 1 (docs/paper.md §5, §8)"),
    # The paper's Table 6 latents: 10,000 channel-normalised f16d32 vectors (ImageNet) each, from the official
    # repository's tools/latent_demos (MIT licence, Copyright (c) 2024 HUST Vision Lab); see notebook 03.
    "latents_cache_f16d32.pt": OfficialFile(
        f"{_GITHUB}/tools/latent_demos/latents_cache_f16d32.pt",
        "10,000 x 32 ImageNet latent vectors of the LDM f16d32 tokenizer, paper's Table 6 (hustvl/LightningDiT, MIT)",
        "42c869303ce13cb251e8f4d75a01400adea9f723360855db36efda9e59e81f1d", 1_281_022),
    "latents_cache_f16d32_vfdinov2.pt": OfficialFile(
        f"{_GITHUB}/tools/latent_demos/latents_cache_f16d32_vfdinov2.pt",
        "10,000 x 32 ImageNet latent vectors of VA-VAE f16d32 (DINOv2), paper's Table 6 (hustvl/LightningDiT, MIT)",
        "28518ac86a9002e6ded74f4dbd0b0d0312f4e3e413b83d47e80a721f04c2682c", 1_281_022),
}


# Every variable that forbids downloads: this project's own switch first (strict: on/off words only), then the
# other libraries' switches, read as those libraries read them (1/true/yes/on).
OFFLINE_ENV_VARS = ("VAVAE_LAB_OFFLINE", "HF_HUB_OFFLINE", "TIMM_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when VAVAE_LAB_OFFLINE is set to 1/true/yes/on."""
    return env_switch("VAVAE_LAB_OFFLINE")


def offline_switches() -> list[str]:
    """The names in OFFLINE_ENV_VARS that are switched on (an empty list: downloads are allowed)."""
    return (["VAVAE_LAB_OFFLINE"] if offline() else []) + [v for v in OFFLINE_ENV_VARS[1:] if env_on(v)]


def is_offline() -> bool:
    """True when a variable in OFFLINE_ENV_VARS forbids downloads (what FID's Inception, the VFM and doctor read)."""
    return bool(offline_switches())


def sha256_of(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _unavailable(url: str, dest: Path, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"cannot download {url} ({why}). Download it on a machine with internet and place it at {dest}, "
        "or point VAVAE_LAB_WEIGHTS at the folder that holds it")


def _stream(response, partial: Path, total: int | None, progress: bool, name: str) -> int:
    """Copy the response body into `partial`; returns the number of bytes written."""
    from tqdm.auto import tqdm

    written = 0
    with open(partial, "wb") as fh, tqdm(total=total, unit="B", unit_scale=True, desc=name,
                                         disable=not progress) as bar:
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            fh.write(block)
            written += len(block)
            bar.update(len(block))
        fh.flush()
        os.fsync(fh.fileno())
    return written


def download(url: str, dest: str | Path, sha256: str | None = None, *, expected_size: int | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest` through dest.partial, check size and SHA-256, then rename; returns dest.

    A file already at `dest` with the right hash (or any file there when no hash is given) is returned without
    downloading; a failed or mismatching download never replaces it. Refuses when VAVAE_LAB_OFFLINE=1.
    """
    dest = Path(dest).expanduser()
    if dest.is_file():
        if sha256 is None or sha256_of(dest) == sha256.lower():
            return dest
        print(f"{dest} does not have the expected SHA-256; downloading it again")
    if offline():
        raise _unavailable(url, dest, "VAVAE_LAB_OFFLINE=1 forbids downloads")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    print(f"downloading {url}\n         -> {dest}")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "vavae_lab"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = expected_size or (int(length) if length and length.isdigit() else None)
            written = _stream(response, partial, total, progress, dest.name)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise _unavailable(url, dest, f"network error: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if (expected_size is not None and written != expected_size) or (length and length.isdigit()
                                                                   and written != int(length)):
        partial.unlink(missing_ok=True)
        want = expected_size if expected_size is not None else int(length)
        raise _unavailable(url, dest, f"transfer interrupted: got {written} of {want} bytes")
    digest = sha256_of(partial)
    if sha256 is not None and digest != sha256.lower():
        partial.unlink(missing_ok=True)
        kept = f"; the existing {dest} is kept" if dest.exists() else ""
        raise WeightsUnavailableError(f"{url} downloaded with SHA-256 {digest}, expected {sha256}{kept}. "
                                      "The file may have changed upstream or the transfer was corrupted; retry, "
                                      "or place a verified copy at the destination")
    os.replace(partial, dest)
    if sha256 is None:
        print(f"sha256 of {dest.name}: {digest} (pass sha256='{digest}' to pin it)")
    return dest


def weights_dirs(root: str | Path | None = None) -> list[Path]:
    """Folders searched for official files: `root` if given, else $VAVAE_LAB_WEIGHTS and data/weights/."""
    if root is not None:
        return [Path(root).expanduser()]
    from .paths import data_dir

    env = os.environ.get("VAVAE_LAB_WEIGHTS")
    return ([Path(env).expanduser()] if env else []) + [data_dir() / "weights"]


def official_file(name: str, root: str | Path | None = None, *, download_missing: bool = True,
                  progress: bool = True) -> Path:
    """The local path of a released file (see OFFICIAL_FILES), downloading it into the first weights folder if absent."""
    if name not in OFFICIAL_FILES:
        raise ConfigError(f"unknown official file {name!r}; choose one of {', '.join(OFFICIAL_FILES)}")
    entry = OFFICIAL_FILES[name]
    folders = weights_dirs(root)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    dest = folders[0] / name
    if not download_missing:
        raise WeightsUnavailableError(f"{name} ({entry.description}) is not in {', '.join(map(str, folders))}; "
                                      f"download it from {entry.url} and place it at {dest}")
    return download(entry.url, dest, entry.sha256, expected_size=entry.size, progress=progress)
