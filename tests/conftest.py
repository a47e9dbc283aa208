"""Test-wide settings: one torch thread (the suite runs beside other work on 2 cores) and no network."""
import os

import pytest
import torch

os.environ.setdefault("VAVAE_LAB_OFFLINE", "1")
torch.set_num_threads(1)
try:  # numpy's BLAS competes for the same cores (KID, precision/recall)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:
    pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Send generated caches to a per-session temp folder unless a test picks its own."""
    if "VAVAE_LAB_DATA" not in os.environ:
        monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path_factory.getbasetemp() / "vavae_cache"))
