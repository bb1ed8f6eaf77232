"""Published reference tables: transcription consistency, eq. 6 and the paper audit."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from benchmark.analysis import published
from benchmark.analysis.audit import audit_published
from benchmark.analysis.published import AVERAGE, METRICS, REGISTRATIONS, load_table
from benchmark.analysis.sensitivity import sensitivity, sensitivity_frame

TABLE_I_ROWS = [
    "GSSD [15] (Portal Only)", "SSD [23]", "GSSD [15]", "Improved RetinaNet [14] †",
    "Improved RetinaNet + G.Conv & C.Fusion", "Improved RetinaNet + G.Conv & C.Fusion†",
    "PixelLink [24]", "PixelLink + G.Conv & C.Fusion", "MSCR [17]", "GSSD++ (ours)",
    "PixelLink++ (ours)",
]  # fmt: skip
S_MODELS = ["retinanet_gconv", "retinanet_gconv_mask", "gssd", "mscr", "pixellink_gconv", "gssd_pp", "pixellink_pp"]  # fmt: skip
# the S2 cells the audit must flag (registration, model, split, metric)
KNOWN_BAD = {(r, "retinanet_gconv", "val", "IoU50") for r in REGISTRATIONS}
KNOWN_BAD |= {("affine", "mscr", s, m) for s, m in METRICS}
KNOWN_BAD |= {("affine", "pixellink_gconv", s, m) for s, m in METRICS if m != "IoU30"}


def test_tables_have_the_papers_rows_and_cells():
    t1 = load_table("I")
    assert list(published.row_labels(t1).values()) == TABLE_I_ROWS
    assert len(t1) == 11 * 8 and set(zip(t1["split"], t1["metric"], strict=True)) == set(METRICS)
    for name in ("S1", "S2"):
        t = load_table(name)
        for reg in REGISTRATIONS:
            assert list(dict.fromkeys(t[t["registration"] == reg]["model"])) == S_MODELS
    assert len(load_table("S1")) == 3 * 7 * 8 and len(load_table("S2")) == 3 * 7 * 9
    assert len(load_table("III")) == 12 * 4
    t2 = load_table("II").set_index("registration")["value"]
    assert t2.to_dict() == {"unregistered": 0.9001, "rigid": 0.9119, "affine": 0.9213, "nonrigid": 0.9622}
    # spot checks against the paper's text
    ap = published.load_ap().set_index(["registration", "model", "split", "metric"])["value"]
    assert ap[("unregistered", "gssd_pp", "test", "IoBB50")] == 77.22
    assert ap[("nonrigid", "pixellink_pp", "val", "IoU30")] == 75.74


def test_cross_table_consistency():
    t1 = load_table("I").set_index(["model", "split", "metric"])["value"]
    t3 = load_table("III")
    full = t3[t3["model"].isin(["gssd_pp", "pixellink_pp"])]
    assert len(full) == 8
    for r in full.itertuples():
        assert t1[(r.model, r.split, r.metric)] == r.value
    s1 = load_table("S1").set_index(["registration", "model", "split", "metric"])["value"]
    for r in load_table("S2").itertuples():
        if r.metric != AVERAGE[1]:
            assert (r.model, r.split, r.metric) in t1.index
            assert (r.registration, r.model, r.split, r.metric) in s1.index


def test_sensitivity_eq6():
    assert sensitivity(50.0, 50.0) == 0.0
    assert sensitivity(45.0, 50.0) == pytest.approx(0.1)
    assert sensitivity(0.6, 0.5) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="undefined"):
        sensitivity(0.5, 0.0)
    with pytest.raises(ValueError, match="finite"):
        sensitivity(float("nan"), 0.5)


def test_eq6_reproduces_every_consistent_published_cell():
    ours = sensitivity_frame(published.load_ap())
    ours = ours.set_index(["registration", "model", "split", "metric"])["value"]
    s2 = load_table("S2")
    cells = s2[s2["metric"] != AVERAGE[1]]
    bad = set()
    for r in cells.itertuples():
        key = (r.registration, r.model, r.split, r.metric)
        if abs(ours[key] - r.value) > 0.03:
            bad.add(key)
    assert bad == KNOWN_BAD
    audit = audit_published()
    flagged = set(map(tuple, audit.inconsistent[["registration", "model", "split", "metric"]].to_numpy()))
    assert flagged == KNOWN_BAD
    consistent = audit.cells[audit.cells["consistent"]]
    assert (consistent["difference"].abs() <= 0.03).all()
    assert len(consistent) == 168 - len(KNOWN_BAD)


def test_audit_names_the_table_at_fault():
    audit = audit_published()
    by_where = {(f.table, f.where): f.message for f in audit.findings}
    typo = by_where[("I", "Improved RetinaNet [14] + G.Conv & C.Fusion, val IoU50")]
    assert "48.53" in typo and "48.63" in typo
    misplaced = by_where[("S1", "Affine method, PixelLink + G.Conv & C.Fusion")]
    assert "'MSCR [17]' (Affine method)" in misplaced
    assert "which no S1 row matches" in by_where[("S1", "Affine method, MSCR [17]")]
    assert ("S2", "Non-rigid method, PixelLink + G.Conv") in by_where
    fig5 = {f.where for f in audit.findings if f.table == "Fig. 5"}
    assert fig5 == {"Affine method, MSCR [17]", "Affine method, PixelLink + G.Conv & C.Fusion"}
    assert not any(f.table == "III" for f in audit.findings)
    # Fig. 5 bars: the printed Average column agrees with its printed cells everywhere
    assert audit.averages["consistent"].all()
    assert "Findings" in audit.to_markdown()


def test_audit_detects_an_inconsistent_average(tmp_path):
    root = tmp_path / "published"
    shutil.copytree(published.published_dir(), root)
    s2 = pd.read_csv(root / "tableS2.csv", dtype=str, keep_default_na=False)
    row = (s2["registration"] == "rigid") & (s2["model"] == "gssd") & (s2["metric"] == "average")
    s2.loc[row, "value"] = "5.45"
    s2.to_csv(root / "tableS2.csv", index=False)
    audit = audit_published(root)
    assert any(f.table == "S2" and "GSSD [15]" in f.where and "Average" in f.message for f in audit.findings)


def test_bad_published_file_names_the_file(tmp_path):
    shutil.copytree(published.published_dir(), tmp_path / "p")
    (tmp_path / "p" / "table1.csv").write_text("source,value\nTable I,abc\n")
    with pytest.raises(ValueError, match="table1.csv"):
        load_table("I", tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="table2.csv"):
        load_table("II", tmp_path / "missing")
