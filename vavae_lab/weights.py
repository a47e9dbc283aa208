"""Reading released weight files safely (weights_only / safetensors) and describing key mismatches."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError

SHOW = 8  # how many keys of each kind an error message lists


def read_weights_file(path: Path, *, missing_hint: str, keep_entry: str):
    """torch.load a file with weights_only=True (or read .safetensors); every failure is a CheckpointError.

    `missing_hint` says where to download the file; `keep_entry` names the entry the conversion command
    keeps when the file also holds pickled Python objects (e.g. 'ema' or 'state_dict').
    """
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}. {missing_hint}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); download it again") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is not a readable torch checkpoint (not a torch.save zip archive: {exc}); download it again"
            ) from exc
        converted = path.with_suffix(f".{keep_entry}.pt")
        raise CheckpointError(
            f"{path} contains pickled Python objects besides tensors, which weights_only loading refuses. "
            "If you trust the file (e.g. the official release), convert it once:\n"
            f"  python -c \"import torch; c = torch.load('{path}', map_location='cpu', weights_only=False); "
            f"torch.save({{'{keep_entry}': c['{keep_entry}']}}, '{converted}')\"\nand load the converted file"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({exc}); download it again") from exc


def mismatch_summary(model: torch.nn.Module, found, exc: Exception) -> str:
    """One line saying how a state dict differs from a model's (falls back to the first line of `exc`)."""
    lines = compare_state_dicts(model.state_dict(), found) if isinstance(found, dict) else []
    return "; ".join(line.strip() for line in lines) or str(exc).strip().splitlines()[0]


def compare_state_dicts(expected: dict, found: dict) -> list[str]:
    """Lines describing missing, unexpected and shape-mismatched keys (empty when the two agree)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k].shape))
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... and {len(items) - SHOW} more" if len(items) > SHOW else ""
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:SHOW])}{more}")
    return lines
