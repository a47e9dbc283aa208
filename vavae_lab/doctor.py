"""`python -m vavae_lab doctor`: versions, devices, presets, cached artifacts, official weights and offline mode."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

# distribution name -> what it is used for
PACKAGES = {"torch": "models and training", "torchvision": "image utilities", "timm": "DINOv2 / MAE foundation models",
            "torch-fidelity": "FID, IS, KID, precision/recall", "scikit-learn": "t-SNE for latent uniformity",
            "ipywidgets": "notebook widgets"}
# used when vavae_lab.download (the registry of released files) is not available
FALLBACK_OFFICIAL_FILES = ("vavae-imagenet256-f16d32-dinov2.pt", "lightningdit-xl-imagenet256-64ep.pt",
                           "lightningdit-xl-imagenet256-800ep.pt", "latents_stats.pt")


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def folder_size(path: Path) -> int:
    """Total bytes of the files below `path` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def versions() -> dict[str, str]:
    """Installed versions of python and the packages in PACKAGES ('not installed' when missing)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def devices() -> list[str]:
    """One line per compute device torch can use, CPU first."""
    import torch

    lines = [f"cpu: {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {props.name}, {props.total_memory / 2 ** 30:.0f} GiB")
    else:
        lines.append("cuda: not available (CPU-only torch, or no NVIDIA driver)")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        lines.append("mps: available (Apple GPU)")
    return lines


def preset_lines() -> list[str]:
    """Each preset: what it trains and a rough cost on a 2-core CPU (vavae_lab.estimate)."""
    from .estimate import estimate_minutes, format_minutes
    from .build import downsampling
    from .presets import PRESETS

    lines = []
    for name, factory in PRESETS.items():
        c = factory()
        m, vf = c.tokenizer.model, c.tokenizer.vf
        f = downsampling(c)
        align = f"VF loss to {vf.foundation}" if vf.enabled else "no VF loss"
        minutes = estimate_minutes(c, "pipeline")
        lines.append(f"{name}: {c.data.source} {c.data.resolution} px; tokenizer f{f}d{m.embed_dim} ({align}, "
                     f"{c.tokenizer.train.steps} steps); LightningDiT-{c.dit.model.size} ({c.dit.train.steps} "
                     f"steps); ~{format_minutes(minutes)} on a 2-core CPU"
                     + ("; meant for GPUs" if minutes > 1440 else ""))
    return lines


def cached_artifacts() -> list[tuple[str, int, int]]:
    """(folder, number of entries, bytes) for each sub-folder of the cache root, largest first."""
    from .paths import data_dir

    root = data_dir() / "cache"
    if not root.is_dir():
        return []
    rows = [(str(p), sum(not q.name.startswith(".") for q in p.iterdir()), folder_size(p))  # not the hidden locks
            for p in sorted(root.iterdir()) if p.is_dir()]
    return sorted(rows, key=lambda r: -r[2])


def official_weights() -> tuple[list[Path], list[tuple[str, Path | None]]]:
    """(folders searched, [(file name, local path or None)]) for the paper's released files."""
    try:
        from .download import OFFICIAL_FILES, weights_dirs
    except ImportError:
        from .paths import data_dir

        env = os.environ.get("VAVAE_LAB_WEIGHTS")
        folders = ([Path(env).expanduser()] if env else []) + [data_dir() / "weights"]
        names = list(FALLBACK_OFFICIAL_FILES)
    else:
        folders, names = weights_dirs(), list(OFFICIAL_FILES)
    found = []
    for name in names:
        hit = next((folder / name for folder in folders if (folder / name).is_file()), None)
        found.append((name, hit))
    return folders, found


def report() -> str:
    """The full doctor report as text."""
    from .paths import data_dir

    out = ["vavae_lab doctor", "", "versions:"]
    out += [f"  {name:<15}{version}" + (f"  ({PACKAGES[name]})" if name in PACKAGES else "")
            for name, version in versions().items()]
    out += ["", "devices:"] + [f"  {line}" for line in devices()]
    out += ["", "presets (rough cost of the whole pipeline):"] + [f"  {line}" for line in preset_lines()]
    out += ["", f"data folder: {data_dir()} (set VAVAE_LAB_DATA to move it)", "cached artifacts:"]
    rows = cached_artifacts()
    out += [f"  {format_bytes(size):>10}  {path} ({count} entries)" for path, count, size in rows] or ["  none yet"]
    if rows:
        out.append(f"  {format_bytes(sum(r[2] for r in rows)):>10}  in total (delete a folder to rebuild it)")
    folders, files = official_weights()
    out += ["", f"official weights (searched in {', '.join(map(str, folders))}; set VAVAE_LAB_WEIGHTS to add one):"]
    out += [f"  {'present' if path else 'missing':<8} {name}" + (f"  {path} ({format_bytes(path.stat().st_size)})"
                                                                   if path else "") for name, path in files]
    from .download import offline_switches

    flags = offline_switches()
    out += ["", "offline mode: " + (f"on ({', '.join(flags)}); nothing is downloaded, local files only" if flags
                                    else "off; missing weights may be downloaded (set VAVAE_LAB_OFFLINE=1 to forbid)")]
    from .pack import RETRAIN_ENV, pack_dir, retraining

    out += [f"pretrained pack: {pack_dir()}" + (f"; ignored, {RETRAIN_ENV} is on: every model trains again"
                                                  if retraining() else f" (set {RETRAIN_ENV}=1 to train everything)")]
    return "\n".join(out)


def run_doctor(file=None) -> None:
    """Print the report to `file` (stdout by default)."""
    print(report(), file=file or sys.stdout)
