"""Shared fixtures: small cohorts built once per session, real-CT fixture paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CT = SHARED / "data" / "real-ct"


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """Folder of the real CT fixtures; tests using it skip when ``../shared`` is absent."""
    if not REAL_CT.is_dir():
        pytest.skip("../shared/data/real-ct is not present")
    return REAL_CT


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run every test on one intra-op thread, then restore the setting.

    The models and arrays under test are tiny: two OpenMP threads on two (often busy) cores
    spend most of their time waiting for each other (measured: up to ~10x slower).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
