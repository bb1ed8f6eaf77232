"""Shared fixtures: small cohorts built once per session, real-CT fixture paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CT = SHARED / "data" / "real-ct"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """Folder of the real CT fixtures; tests using it skip when ``../shared`` is absent."""
    if not REAL_CT.is_dir():
        pytest.skip("../shared/data/real-ct is not present")
    return REAL_CT
