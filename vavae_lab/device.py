"""Device selection (`auto`: cuda, then mps, then cpu) and precision helpers."""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps' into a torch.device, checking availability."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} but MPS is not available here; use device=auto or device=cpu")
    return device


def autocast(device: torch.device, precision: str):
    """An autocast context for 'bf16'/'fp16' on devices that support it; a no-op for 'fp32'."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise ConfigError(f"precision={precision!r}; use fp32, bf16 or fp16")
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("precision=fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def one_thread():
    """Run the block on one CPU thread, then restore the thread count.

    CPU reductions sum in an order that depends on the thread count, so a network trained on two threads differs from
    the same seed on one (the toy FID network: weights apart by up to 4, its rFIDs by a few percent). The shared toy
    networks every score depends on train inside this, so whichever job or notebook trains them first gets the same
    weights."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
