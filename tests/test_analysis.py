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
from benchmark.analysis.estimates import estimate
from benchmark.analysis.facts import format_estimate, run_facts
from benchmark.analysis.pipeline import analyze_published, analyze_runs
from benchmark.analysis.report import write_report
from benchmark.analysis.runs import collect_runs
from benchmark.analysis.sensitivity import sensitivity_frame
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


def _predictions(rng: np.random.Generator, noise: float, patients: int = 6) -> pd.DataFrame:
    """Three lesion slices per patient, one lesion each; one detection near it (``noise`` px)
    and one far away."""
    rows = []
    for p in range(patients):
        for s in range(3):
            x, y = rng.uniform(10, 50, 2)
            rows.append((f"p{p}", s, "gt", x, y, x + 20, y + 20, np.nan))
            dx, dy = rng.normal(0, noise, 2)
            rows.append(
                (f"p{p}", s, "det", x + dx, y + dy, x + 20 + dx, y + 20 + dy, rng.uniform(0.3, 1))
            )
            rows.append((f"p{p}", s, "det", 100, 100, 120, 120, rng.uniform(0.2, 0.6)))
    return pd.DataFrame(rows, columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"])


def _write_predictions(run: Path, frames: dict[str, pd.DataFrame]) -> None:
    for split, frame in frames.items():
        frame.to_csv(run / f"predictions_{split}.csv", index=False)


def _prediction_runs(root: Path, noise: dict[str, float], seeds=(0,), patients: int = 6) -> Path:
    """gssd runs whose predictions differ only in how well detections sit on the lesions."""
    for k in seeds:
        for variant, sigma in noise.items():
            run = make_run(root, variant, "gssd", k)
            rng = np.random.default_rng(100 * k + 7)  # same boxes in every variant of a seed
            frames = {split: _predictions(rng, 0.0, patients) for split in ("val", "test")}
            jitter = np.random.default_rng(published.VARIANTS.index(variant))
            for frame in frames.values():
                det = frame["kind"] == "det"
                shift = jitter.normal(0, sigma, (int(det.sum()), 1))
                frame.loc[det, ["x0", "x1"]] += shift
            _write_predictions(run, frames)
    return root


def test_paired_bootstrap_is_seeded_and_paired(tmp_path: Path):
    runs = _prediction_runs(tmp_path / "runs", {"unregistered": 0.0, "rigid": 0.0})
    found = collect_runs(runs)
    a = estimate(found, n_boot=200, seed=3)
    b = estimate(found, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(a.sensitivity, b.sensitivity)
    # identical predictions in both variants: every paired resample gives exactly 0
    sens = a.sensitivity
    assert len(sens) == 9 and (sens["undefined_reason"] == "").all()
    assert (sens[["value", "ci_low", "ci_high"]] == 0).all().all()
    # ... while the AP itself varies over the resamples
    ap = a.ap.set_index(["registration", "split", "metric"])
    low, high = ap.loc[("rigid", "val", "IoU70"), ["ci_low", "ci_high"]]
    assert low < ap.loc[("rigid", "val", "IoU70"), "value"] <= high
    assert estimate(found, n_boot=200, seed=4).ap["ci_low"].tolist() != a.ap["ci_low"].tolist()


def test_sensitivity_interval_brackets_value_and_pools_seeds(tmp_path: Path):
    runs = _prediction_runs(tmp_path / "runs", {"unregistered": 5.0, "nonrigid": 0.5}, (0, 1))
    est = estimate(collect_runs(runs), n_boot=300, seed=1)
    sens = est.sensitivity.set_index(["split", "metric"])
    row = sens.loc[("val", "IoU70")]
    assert row["n_seeds"] == 2 and np.isfinite(row["std"])
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["value"] > 0
    avg = sens.loc[("all", "average")]
    assert avg["undefined_reason"] == "" and avg["ci_low"] < avg["value"] < avg["ci_high"]
    assert est.splits["lesion_boxes"].eq(18).all() and est.splits["patients"].eq(6).all()


def test_undefined_cells_say_why_never_100(tmp_path: Path):
    runs = _prediction_runs(tmp_path / "runs", {"unregistered": 0.0, "affine": 0.0})
    miss = runs / "tiny" / "affine" / "gssd" / "seed0" / "predictions_val.csv"
    frame = pd.read_csv(miss)
    frame.loc[frame["kind"] == "det", ["x0", "x1"]] += 300  # no detection hits: AP 0
    frame.to_csv(miss, index=False)
    sens = estimate(collect_runs(runs), n_boot=50).sensitivity.set_index(["split", "metric"])
    assert sens.loc[("val", "IoU50"), "undefined_reason"] == "registered AP is 0 (seed 0)"
    assert np.isnan(sens.loc[("val", "IoU50"), ["value", "ci_low", "ci_high"]].astype(float)).all()
    assert sens.loc[("all", "average"), "undefined_reason"].startswith("undefined cells: val IoU30")
    assert sens.loc[("test", "IoU50"), "undefined_reason"] == ""
    few = estimate(collect_runs(runs), n_boot=50, min_boxes=19).sensitivity
    assert few["value"].isna().all()
    assert "18 lesion boxes in the split (fewer than 19)" in set(few["undefined_reason"])
    assert format_estimate(np.nan, reason="x") == "n/a"
    assert format_estimate(60.84, 41.2, 80.06) == "60.8 [41.2, 80.1]"
    assert format_estimate(60.84) == "60.8 [no CI]"


def test_sensitivity_frame_from_published_style_ap():
    ap = pd.DataFrame(
        [("m", v, s, k, value) for v, value in (("unregistered", 60.0), ("rigid", 80.0), ("affine", 0.0))
         for s, k in published.METRICS],
        columns=["model", "registration", "split", "metric", "value"],
    )  # fmt: skip
    sens = sensitivity_frame(ap).set_index(["registration", "split", "metric"])
    assert sens.loc[("rigid", "val", "IoU30"), "value"] == pytest.approx(25.0)
    assert sens.loc[("rigid", "all", "average"), "value"] == pytest.approx(25.0)
    assert sens.loc[("affine", "all", "average"), "undefined_reason"] == "all eight cells undefined"
    assert sens.loc[("affine", "val", "IoU30"), "undefined_reason"].startswith("registered AP is 0")


def test_cis_and_facts_from_predictions(runs: Path, tmp_path: Path):
    rng = np.random.default_rng(1)
    for variant, noise in (("unregistered", 6.0), ("rigid", 1.0), ("nonrigid", 1.0)):
        for seed in (0, 1):
            run = runs / "tiny" / variant / "gssd" / f"seed{seed}"
            _write_predictions(run, {s: _predictions(rng, noise) for s in ("val", "test")})
    result = analyze_runs(runs, tmp_path / "out", bootstrap=20, seed=5)
    sens = pd.read_csv(tmp_path / "out" / "sensitivity.csv", keep_default_na=False, na_values=[""])
    gssd = sens[sens["model"] == "gssd"]
    assert len(gssd) == 2 * 9 and gssd["ci_low"].notna().all()
    assert (gssd["ci_low"] <= gssd["ci_high"]).all()
    assert sens[sens["model"] == "gssd_pp"]["ci_low"].isna().all()
    assert any("gssd_pp" in m and "predictions_val.csv" in m for m in result.missing)
    ap = pd.read_csv(tmp_path / "out" / "ap.csv")
    assert ap[ap["model"] == "gssd"]["ci_low"].notna().all()
    t1 = result.tables["I"]
    assert tables.CI_KIND in set(t1[t1["Methods"] == "GSSD [15]"]["value"])
    again = analyze_runs(runs, tmp_path / "again", bootstrap=20, seed=5)
    assert again.missing == result.missing
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "again" / "sensitivity.csv", keep_default_na=False, na_values=[""]),
        sens,
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    facts = summary["facts"]
    assert facts["seeds"] == [0, 1] and facts["cohorts"] == ["tiny"]
    assert facts["evaluated"]["unregistered"]["test"] == {"patients": 6, "lesion_boxes": 18}
    assert "6 test patients, not 10" in facts["differences_from_paper"]
    assert facts["bootstrap"] == 20 and facts["paper_protocol"]["test_patients"] == 10
    assert {"value", "ci_low", "ci_high", "undefined_reason"} <= set(summary["sensitivity"][0])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "What the numbers rest on" in readme and "NOT the paper's protocol" in readme


def test_facts_of_an_imported_paper_sized_cohort(tmp_path: Path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()

    def manifest(tests: int) -> None:
        patients = [{"id": f"p{i}", "split": "test" if i < tests else "train"} for i in range(280)]
        data = {"name": "hospital", "kind": "imported", "patients": patients}
        (cohort / "cohort.json").write_text(json.dumps(data))

    manifest(10)
    root = tmp_path / "runs"
    for variant in ("unregistered", "rigid"):
        run = make_run(root, variant, "gssd", cohort=cohort)
        config = json.loads((run / "config.json").read_text())
        config |= {"profile": "paper", "detector": {"input_size": 300}, "train": {"iterations": 60000}}  # fmt: skip
        (run / "config.json").write_text(json.dumps(config))
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["test"] |= {"n_patients": 10, "n_gt": 40}
        metrics["val"] |= {"n_patients": 54, "n_gt": 200}
        (run / "metrics.json").write_text(json.dumps(metrics))
    found = collect_runs(root)
    facts = run_facts(found, estimate(found, n_boot=0))
    assert facts.cohort_kinds == ("imported",) and facts.cohort_size == 280
    assert facts.differences() == [] and facts.profiles == ("paper",)
    assert "protocol: the paper's" in facts.lines()[-1]
    assert facts.evaluated["rigid"]["val"] == {"patients": 54, "lesion_boxes": 200}
    manifest(5)
    facts = run_facts(found, estimate(found, n_boot=0))
    assert facts.differences() == ["5 test patients, not 10"]
    assert facts.lines()[-1].startswith("NOT the paper's protocol: 5 test patients, not 10.")


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
