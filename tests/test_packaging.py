"""Installed from a wheel, the published tables are package data (the full check, a wheel
installed into a fresh venv, is ``.ci/check-wheel``)."""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import pytest

from benchmark.analysis import published

REPO = Path(__file__).resolve().parents[1]


def test_published_tables_come_from_the_package_when_installed(tmp_path, monkeypatch):
    monkeypatch.delenv("PHASEBENCH_PUBLISHED", raising=False)
    assert published.published_dir() == REPO / "results" / "published"  # a source checkout
    package = tmp_path / "site-packages" / "benchmark"
    shutil.copytree(REPO / "results" / "published", package / "published")
    (package / "published" / "table2.csv").unlink()
    monkeypatch.setattr(importlib.resources, "files", lambda name: package)
    assert published.published_dir() == package / "published"
    assert len(published.load_table("I")) == len(published.load_table("I", REPO / "results"
                                                                       / "published"))
    with pytest.raises(FileNotFoundError, match=str(package / "published" / "table2.csv")):
        published.load_table("II")  # not read from the checkout
