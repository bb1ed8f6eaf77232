"""End to end: run folders made by ``python -m benchmark train --profile smoke`` -> analyze, report.

The cohort is the tests' tiny hand-made one and registration is replaced by an identity
backend (the variant's phases are the unregistered ones) so the test stays fast; the rest is
the real pipeline: smoke training and evaluation, then the analysis of the run folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis.pipeline import analyze_runs
from benchmark.analysis.published import METRICS
from benchmark.analysis.report import write_report
from benchmark.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("benchmark.commands.train") is None,
        reason="the train command is not available",
    ),
]


class IdentityBackend:
    """A registration that changes nothing (displacement zero)."""

    name = "identity"
    reuses_affine = False

    def register(self, fixed, moving, spacing, method, initial=None):
        from registration.backends import SliceRegistration

        return SliceRegistration(np.asarray(moving, np.float32).copy(), None)

    def warp_mask(self, mask, reg):
        return np.asarray(mask).copy()

    def displacement(self, reg):
        return np.zeros((*reg.warped.shape, 2), np.float32)

    def transform_maps(self, reg):
        return [{"Transform": ["TranslationTransform"], "TransformParameters": ["0", "0"]}]


def test_smoke_run_folder_end_to_end(tmp_path: Path):
    from tiny_cohort import make_cohort

    from registration.stage import read_log, register_variant

    cohort = tmp_path / "cohort"
    make_cohort(cohort, patients=6, size=64, slices=4)
    register_variant(cohort, "rigid", backend=IdentityBackend(), progress=False)
    status = set(read_log(cohort, "rigid")["status"])
    assert "failed" not in status and "registered" in status, status
    runs = tmp_path / "runs"
    for variant in ("unregistered", "rigid"):
        args = ["train", "--cohort", str(cohort), "--variant", variant, "--model", "ssd"]
        assert main([*args, "--profile", "smoke", "--runs", str(runs)]) == 0
    out = tmp_path / "analysis"
    result = analyze_runs(runs, out)
    assert {"I", "S1"} <= set(result.tables)
    table1 = result.tables["I"].drop(columns="section").set_index(["Methods", "value"])
    ours = table1.loc[("SSD [23]", "ours")].astype(float)
    assert ours.notna().all() and ((ours >= 0) & (ours <= 100)).all()
    assert table1.loc[("SSD [23]", "published"), "val IoU30"] == 55.26
    # identity "registration": same data, same seed -> same AP, sensitivity 0 (or undefined
    # where a smoke run scores AP 0: eq. 6 divides by the registered AP)
    sens = pd.read_csv(out / "sensitivity.csv")
    rigid = sens[(sens["model"] == "ssd") & (sens["registration"] == "rigid")]
    assert len(rigid) >= len(METRICS) and np.allclose(rigid["value"].dropna(), 0.0)
    assert (out / "README.md").is_file()
    page = write_report(runs, tmp_path / "report.html").read_text()
    assert "SSD [23]" in page and '"model": "ssd"' in page
