"""analyze / compare / report on fabricated run folders (the run-folder layout of the runner)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.analysis import published, tables
from benchmark.analysis.pipeline import analyze_published, analyze_runs
from benchmark.analysis.report import write_report
from benchmark.analysis.runs import collect_runs
from benchmark.analysis.sensitivity import bootstrap_replicates, percentile_ci
from benchmark.cli import main

AP = published.load_ap().set_index(["registration", "model", "split", "metric"])["value"]


def make_run(root: Path, variant: str, model: str, seed: int = 0, shift: float = 0.0, cohort: Path | None = None) -> Path:  # fmt: skip
    """A finished run whose AP is the published one (fraction) plus ``shift`` points."""
    run = root / "tiny" / variant / model / f"seed{seed}"
    run.mkdir(parents=True)
    metrics: dict = {"val": {}, "test": {}, "seconds": 12.5, "images_per_second": 40.0}
    for (reg, m, split, metric), value in AP.items():
        if (reg, m) == (variant, model):
            metrics[split][metric] = (value + shift) / 100
    config = {
        "cohort": str(cohort or root / "cohort"),
        "variant": variant,
        "model": model,
        "seed": seed,
    }
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for model in ("gssd", "gssd_pp"):
        for variant in ("unregistered", "rigid", "nonrigid"):
            make_run(root, variant, model, 0)
            make_run(root, variant, model, 1, shift=0.5)
    cohort = root / "cohort" / "variants"
    cohort.mkdir(parents=True)
    pd.DataFrame({"variant": ["unregistered", "nonrigid"], "liver_dice": [0.88, 0.95],
                  "liver_dice_published": [0.9001, 0.9622], "ncc": [0.5, 0.7],
                  "residual_mm": [3.0, 1.0], "slices": [40, 40]}).to_csv(cohort / "table2.csv", index=False)  # fmt: skip
    (root / "tiny" / "affine" / "gssd" / "seed0").mkdir(parents=True)  # unfinished run
    return root


def test_analyze_runs_end_to_end(runs: Path, tmp_path: Path):
    out = tmp_path / "analysis"
    result = analyze_runs(runs, out)
    assert set(result.tables) == {"I", "II", "S1", "S2"}
    for name in ("tableI", "tableS1", "tableS2", "table2"):
        for suffix in (".csv", ".md", ".tex"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    for suffix in (".png", ".pdf"):
        assert (out / f"fig5{suffix}").stat().st_size > 1000
    # Table I: the paper's rows and columns; ours = mean over seeds = published + 0.25
    t1 = result.tables["I"]
    labels = list(dict.fromkeys(t1["Methods"]))
    assert labels == list(published.row_labels(published.load_table("I")).values())
    assert list(t1.columns[3:]) == [tables.header(s, m) for s, m in published.METRICS]
    gssd = t1[t1["Methods"] == "GSSD [15]"].set_index("value")
    assert gssd.loc["ours", "val IoU30"] == pytest.approx(56.58 + 0.25)
    assert gssd.loc["difference", "test IoBB50"] == pytest.approx(0.25)
    assert np.isnan(t1[t1["Methods"] == "SSD [23]"].set_index("value").loc["ours", "val IoU30"])
    # Table S2: sensitivity from our AP; the mean over two seeds of eq. 6
    s2 = result.tables["S2"]
    row = s2[(s2["section"] == "Non-Rigid Method") & (s2["Methods"] == "GSSD [15]")].set_index(
        "value"
    )
    u, r = AP[("unregistered", "gssd", "val", "IoU30")], AP[("nonrigid", "gssd", "val", "IoU30")]
    expect = np.mean([100 * (1 - u / r), 100 * (1 - (u + 0.5) / (r + 0.5))])
    assert row.loc["ours", "val IoU30"] == pytest.approx(expect)
    assert row.loc["published", "val IoU30"] == 11.15
    sens = pd.read_csv(out / "sensitivity.csv")
    assert (sens["n_seeds"] == 2).all() and (sens["std"] > 0).any()
    assert result.tables["II"]["Dice published"].tolist() == [0.9001, 0.9622]
    readme = (out / "README.md").read_text()
    assert "unfinished" in readme and "affine" in readme and "Table III" in readme
    assert "paper models without runs" in readme


def test_partial_and_empty_run_folders(tmp_path: Path):
    root = tmp_path / "runs"
    make_run(root, "unregistered", "ssd")
    result = analyze_runs(root, tmp_path / "a")
    assert set(result.tables) == {"I"}
    text = " ".join(result.missing)
    assert "Table S1" in text and "Table S2" in text and "Fig. 5" in text and "Table II" in text
    (tmp_path / "empty").mkdir()
    empty = analyze_runs(tmp_path / "empty", tmp_path / "b")
    assert not empty.tables and any("no finished run" in m for m in empty.missing)
    assert (tmp_path / "b" / "README.md").is_file()


def test_table3_from_ablation_runs(tmp_path: Path):
    root = tmp_path / "runs"
    make_run(root, "unregistered", "gssd_pp")
    ablation = make_run(root, "unregistered", "gssd_pp_no_dc")
    t3 = published.load_table("III")
    metrics: dict = {"val": {}, "test": {}}
    for r in t3[t3["model"] == "gssd_pp_no_dc"].itertuples():
        metrics[r.split][r.metric] = (r.value - 1.0) / 100
    (ablation / "metrics.json").write_text(json.dumps(metrics))
    table = analyze_runs(root, tmp_path / "a").tables["III"]
    assert list(dict.fromkeys(table["section"])) == ["GSSD++", "PixelLink++"]
    assert len(table) == 12 * 3 and list(table.columns[3:]) == ["val IoU50", "val IoBB50", "test IoU50", "test IoBB50"]  # fmt: skip
    row = table[table["Methods"] == "w/o DC Module"].iloc[:3].set_index("value")
    assert row.loc["difference", "test IoBB50"] == pytest.approx(-1.0)
    full = table[table["Methods"] == "GSSD++"].set_index("value")
    assert full.loc["difference", "val IoU50"] == pytest.approx(0.0)


def test_bad_runs_are_reported_not_fatal(runs: Path, tmp_path: Path):
    bad = make_run(runs, "rigid", "ssd")
    (bad / "metrics.json").write_text('{"val": {"IoU30": 55.2}}')  # percent, not a fraction
    broken = make_run(runs, "rigid", "mscr")
    (broken / "metrics.json").write_text("{not json")
    found = collect_runs(runs)
    assert any("not an AP fraction" in p and "ssd" in p for p in found.problems)
    assert any("unreadable" in p and "mscr" in p for p in found.problems)
    assert analyze_runs(runs, tmp_path / "out").tables


def test_cli_analyze_compare_and_errors(runs: Path, tmp_path: Path, capsys):
    assert main(["analyze", "--published", "--out", str(tmp_path / "pub")]) == 0
    for name in ("fig5.png", "fig5.pdf", "tableS2.md", "tableS2.tex", "audit.md", "audit.json"):
        assert (tmp_path / "pub" / name).stat().st_size > 0
    assert "48.53" in capsys.readouterr().out
    assert (
        main(["compare", "--runs", str(runs), "--model", "gssd_pp", "--out", str(tmp_path / "c")])
        == 0
    )
    rank = pd.read_csv(tmp_path / "c" / "rank_gssd_pp.csv")
    mine = rank[rank["source"] == "yours"]
    assert len(mine) == 2 and set(mine["section"]) == {"Rigid Method", "Non-rigid Method"}
    assert (tmp_path / "c" / "fig5_gssd_pp.png").stat().st_size > 1000
    t1 = pd.read_csv(tmp_path / "c" / "table1_gssd_pp.csv")
    assert len(t1) == 12 and t1["Methods"].iloc[-1].endswith("(yours)")
    assert main(["compare", "--runs", str(runs), "--model", "nope"]) == 2
    assert main(["analyze", "--runs", str(tmp_path / "absent")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    other = runs / "second" / "unregistered" / "ssd" / "seed0"
    shutil.copytree(runs / "tiny" / "unregistered" / "gssd" / "seed0", other)
    assert main(["analyze", "--runs", str(runs), "--out", str(tmp_path / "x")]) == 2
    assert "choose one with --cohort" in capsys.readouterr().err
    assert (
        main(["analyze", "--runs", str(runs), "--cohort", "second", "--out", str(tmp_path / "y")])
        == 0
    )


def test_published_analysis_matches_audit(tmp_path: Path):
    result = analyze_published(tmp_path)
    s2 = result.tables["S2"]
    diff = s2[s2["value"] == "difference"]
    assert diff["Average"].abs().max() == pytest.approx(12.23, abs=0.01)  # the MSCR affine row


def _predictions(rng: np.random.Generator, noise: float) -> pd.DataFrame:
    rows = []
    for p in range(6):
        for s in range(3):
            x, y = rng.uniform(10, 50, 2)
            rows.append((f"p{p}", s, "gt", x, y, x + 20, y + 20, np.nan))
            dx, dy = rng.normal(0, noise, 2)
            rows.append(
                (f"p{p}", s, "det", x + dx, y + dy, x + 20 + dx, y + 20 + dy, rng.uniform(0.3, 1))
            )
            rows.append((f"p{p}", s, "det", 100, 100, 120, 120, rng.uniform(0.2, 0.6)))
    return pd.DataFrame(rows, columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"])


def test_paired_patient_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    unreg, reg = _predictions(rng, 6.0), _predictions(rng, 1.0)
    a = bootstrap_replicates(unreg, reg, ["IoU50"], 50, seed=3)["IoU50"]
    b = bootstrap_replicates(unreg, reg, ["IoU50"], 50, seed=3)["IoU50"]
    np.testing.assert_array_equal(a, b)
    low, high = percentile_ci(a)
    assert low < high and np.median(a) > 0  # worse aligned boxes -> positive sensitivity


def test_bootstrap_cis_from_predictions(runs: Path, tmp_path: Path):
    rng = np.random.default_rng(1)
    for variant, noise in (("unregistered", 6.0), ("rigid", 1.0), ("nonrigid", 1.0)):
        for split in ("val", "test"):
            path = runs / "tiny" / variant / "gssd" / "seed0" / f"predictions_{split}.csv"
            _predictions(rng, noise).to_csv(path, index=False)
    result = analyze_runs(runs, tmp_path / "out", bootstrap=20, seed=5)
    sens = pd.read_csv(tmp_path / "out" / "sensitivity.csv")
    gssd = sens[sens["model"] == "gssd"]
    assert len(gssd) == 2 * 9 and gssd["ci_low"].notna().all()
    assert (gssd["ci_low"] <= gssd["ci_high"]).all()
    assert sens[sens["model"] == "gssd_pp"]["ci_low"].isna().all()
    assert any("gssd_pp" in m and "predictions_val.csv" in m for m in result.missing)
    again = analyze_runs(runs, tmp_path / "again", bootstrap=20, seed=5)
    assert again.missing == result.missing
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / "sensitivity.csv"), sens)


def test_report_is_self_contained(runs: Path, tmp_path: Path):
    path = write_report(runs, tmp_path / "report.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert (
        'src="data:image/png;base64,' in page and "http://" not in page and "https://" not in page
    )
    for text in ("Table I", "Table S2", "Table II", "Audit", "seed1", "torch", "12.5"):
        assert text in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(runs: Path, tmp_path: Path):
    path = write_report(runs, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
           "--window-size=1400,2000", path.as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
