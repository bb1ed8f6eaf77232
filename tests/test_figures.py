"""Fig. 5, the rendered tables and the HTML report as a reader sees them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from benchmark.analysis import published, tables
from benchmark.analysis.estimates import estimate
from benchmark.analysis.facts import run_facts
from benchmark.analysis.figures import draw_fig5, fig5
from benchmark.analysis.report import _table, write_report
from benchmark.analysis.runs import collect_runs

LABELS = published.row_labels(published.load_ap())


def ours(rows: list[tuple]) -> pd.DataFrame:
    """(model, registration, value, ci_low, ci_high, undefined_reason) rows of "your runs"."""
    columns = ["model", "registration", "value", "ci_low", "ci_high", "undefined_reason"]
    return pd.DataFrame(rows, columns=columns).assign(source="your runs")


def published_bars() -> pd.DataFrame:
    s2 = published.load_table("S2")
    return s2[s2["metric"] == "average"].assign(source="published (Table S2)")


@pytest.fixture()
def drawn():
    bars = pd.concat(
        [
            ours(
                [
                    ("gssd", "rigid", 3.0, 1.0, 6.0, ""),
                    ("gssd", "affine", -25921.0, -90000.0, -300.0, ""),
                    ("gssd", "nonrigid", 9.0, 4.0, 15.0, ""),
                    ("gssd_pp", "rigid", 2.0, 0.5, 4.0, ""),
                    ("gssd_pp", "affine", np.nan, np.nan, np.nan, "registered AP 0 (val IoU70)"),
                    ("gssd_pp", "nonrigid", 1.0, -2.0, 3.0, ""),
                ]
            ),
            published_bars(),
        ]
    )
    fig = draw_fig5(bars, LABELS, caption="Your runs: profile smoke; test: 1 patient; seed 7.")
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def texts(fig) -> list[str]:
    found = [t.get_text() for t in fig.findobj(plt.Text)]
    return [t for t in found if t]


def test_ci_are_error_bars_and_undefined_is_na(drawn):
    ours_ax, pub_ax = drawn.axes
    bars = [c for c in ours_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4  # every defined, unclipped bar of ours carries its CI
    segments = np.concatenate([c.lines[2][0].get_segments() for c in bars])
    assert {tuple(np.round(s[:, 1], 6)) for s in segments} >= {(1.0, 6.0), (-2.0, 3.0)}
    assert not [c for c in pub_ax.containers if isinstance(c, ErrorbarContainer)]
    assert "error bars: 95% CI" in ours_ax.get_title(loc="left")
    ours_texts = [t.get_text() for t in ours_ax.texts]
    assert ours_texts.count("n/a") == 1  # the undefined bar, not a zero-height bar
    assert ours_texts.count("no data") == len(set(published_bars()["model"]) - {"gssd", "gssd_pp"})
    assert sum(p.get_height() == 0 for p in ours_ax.patches) == 0
    caption = drawn.get_supxlabel()
    assert "registered AP 0 (val IoU70)" in caption and "seed 7" in caption


def test_extreme_value_is_flagged_and_does_not_set_the_axis(drawn):
    ours_ax, pub_ax = drawn.axes
    low, high = ours_ax.get_ylim()
    assert -60 < low < -2 and high < 30  # scaled to the other bars and CIs, not to -25921
    assert "-25921 %" in [t.get_text() for t in ours_ax.texts]
    clipped = [p for p in ours_ax.patches if p.get_hatch()]
    assert len(clipped) == 1 and low < clipped[0].get_height() < 0
    assert "|value| > 100 %" in drawn.get_supxlabel()


def test_a_large_bar_of_ours_does_not_flatten_the_published_panel():
    large = ours([("gssd", "rigid", 85.0, 70.0, 99.0, "")])
    fig = draw_fig5(pd.concat([large, published_bars()]), LABELS)
    ours_ax, pub_ax = fig.axes
    assert ours_ax.get_ylim()[1] > 99 and pub_ax.get_ylim()[1] < 20  # a scale per panel
    assert max(p.get_height() for p in pub_ax.patches) > 0.7 * pub_ax.get_ylim()[1]
    plt.close(fig)
    alike = ours([("gssd", "rigid", 10.0, 8.0, 12.0, "")])
    fig = draw_fig5(pd.concat([alike, published_bars()]), LABELS)
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()  # alike ranges: one scale
    plt.close(fig)


def test_tick_labels_are_whole_and_inside_the_figure(drawn):
    axis = drawn.axes[-1]
    shown = [t.get_text().replace("\n", " ") for t in axis.get_xticklabels()]
    expected = [tables.display_label(LABELS[m]) for m in ["gssd", "gssd_pp", *_pub_only()]]
    assert shown == expected
    assert "GSSD++ (proposed)" in shown and not any("(ours)" in s.lower() for s in shown)
    box = drawn.bbox
    renderer = drawn.canvas.get_renderer()
    for tick in axis.get_xticklabels():
        extent = tick.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0


def _pub_only() -> list[str]:
    models = list(dict.fromkeys(published_bars()["model"]))
    return [m for m in models if m not in ("gssd", "gssd_pp")]


def test_seeds_without_ci_give_sd_bars(tmp_path: Path):
    rows = pd.DataFrame(
        {"model": "gssd", "registration": "rigid", "value": [2.0, 4.0, 6.0], "source": "x"}
    )
    fig = draw_fig5(rows)
    (bar,) = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    low, high = bar.lines[2][0].get_segments()[0][:, 1]
    assert (low, high) == pytest.approx((2.0, 6.0))  # mean 4 +- sd 2
    assert "SD over seeds" in fig.axes[0].get_title(loc="left")
    plt.close(fig)
    paths = fig5(rows, tmp_path / "f")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)
    with pytest.raises(ValueError, match="no sensitivity"):
        fig5(rows.iloc[:0], tmp_path / "g")


def sensitivity_rows() -> pd.DataFrame:
    """Tidy sensitivity with CIs: one defined, one undefined, one extreme cell."""
    rows = []
    for split, metric in (*published.METRICS, published.AVERAGE):
        rows.append(("gssd", "nonrigid", split, metric, 5.0, 1.0, 9.0, ""))
    rows[1] = ("gssd", "nonrigid", "val", "IoU50", np.nan, np.nan, np.nan, "registered AP 0")
    rows[2] = ("gssd", "nonrigid", "val", "IoU70", -25921.0, -9e4, -300.0, "")
    columns = ["model", "registration", "split", "metric", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=[*columns, "undefined_reason"])


def test_tables_show_ci_undefined_and_flag():
    spec = tables.SPECS["S2"]
    frame = tables.comparison(spec, sensitivity_rows(), published.load_table("S2"), LABELS)
    layout = tables.layout(frame, spec)
    gssd = layout[(layout["section"] == "Non-Rigid Method") & (layout["Methods"] == "GSSD [15]")]
    row = gssd.set_index("value")
    assert list(row.index) == ["ours", tables.CI_KIND, "published", "difference"]
    assert row.loc["ours", "val IoU50"] == "n/a" and row.loc["ours", "val IoU30"] == 5.0
    assert row.loc[tables.CI_KIND, "val IoU30"] == "[1.00, 9.00]"
    assert math.isnan(row.loc["difference", "val IoU50"])
    md = tables.to_markdown(layout, "S2", flag_above=spec.flag_above)
    assert "-25921.00 (!)" in md and "|value| > 100 %" in md and "n/a: undefined" in md
    assert "(ours)" not in md.lower() and "GSSD++ (proposed)" in md
    tex = tables.to_latex(layout, "S2", tables.groups_of(spec), flag_above=spec.flag_above)
    assert "-25921.00 (!)" in tex and "\\footnotesize" in tex
    assert tables.format_cell(99.0, "ours", flag_above=100) == "99.00"
    assert tables.format_cell(-101.0, "difference", flag_above=100) == "-101.00 (!)"
    assert tables.format_cell(np.int64(340)) == "340"


def test_html_table_headers_and_marks():
    spec = tables.SPECS["S2"]
    frame = tables.comparison(spec, sensitivity_rows(), published.load_table("S2"), LABELS)
    page = _table(tables.layout(frame, spec), tables.groups_of(spec), flag_above=100, cls="paper")
    assert page.count(">Average<") == 1 and '<th rowspan="2">Average</th>' in page
    assert '<td class="flag">-25921.00 (!)</td>' in page and '<td class="na">n/a</td>' in page
    assert 'class="paper"' in page and '<tr class="ci">' in page
    assert "(proposed)" in page and "(Ours)" not in page and "(ours)" not in page


def make_smoke_like_runs(root: Path) -> Path:
    """A run folder as ``run`` leaves it: cohort manifest, Table II, configs, predictions."""
    cohort = root / "work" / "c1"
    (cohort / "variants").mkdir(parents=True)
    splits = ["train"] * 4 + ["val", "test"]
    manifest = {"kind": "synthetic", "patients": [{"id": f"p{i}", "split": s} for i, s in enumerate(splits)]}  # fmt: skip
    (cohort / "cohort.json").write_text(json.dumps(manifest))
    pd.DataFrame({"variant": ["unregistered", "nonrigid"], "liver_dice": [0.94, 0.98]}).to_csv(
        cohort / "variants" / "table2.csv", index=False
    )
    ap = published.load_ap().set_index(["registration", "model", "split", "metric"])["value"]
    for variant in ("unregistered", "nonrigid"):
        run = root / "runs" / "c1" / variant / "gssd" / "seed3"
        run.mkdir(parents=True)
        metrics: dict = {"val": {}, "test": {}, "device": "cpu"}
        for (reg, model, split, metric), value in ap.items():
            if (reg, model) == (variant, "gssd"):
                metrics[split][metric] = value / (100 if variant == "nonrigid" else 400)
        config = {"cohort": str(cohort), "variant": variant, "model": "gssd", "seed": 3,
                  "profile": "smoke", "train": {"iterations": 4}}  # fmt: skip
        (run / "config.json").write_text(json.dumps(config))
        (run / "metrics.json").write_text(json.dumps(metrics))
        gt = pd.DataFrame({"patient": "p5", "slice": [1, 2, 3], "kind": "gt", "x0": 0.0,
                           "y0": 0.0, "x1": 10.0, "y1": 10.0, "score": float("nan")})  # fmt: skip
        gt.to_csv(run / "predictions_test.csv", index=False)
    return root / "runs"


def test_facts_and_report(tmp_path: Path):
    runs = make_smoke_like_runs(tmp_path)
    found = collect_runs(runs)
    facts = run_facts(found, estimate(found))
    assert facts.profiles == ("smoke",) and facts.seeds == (3,) and facts.cohort_kinds == ("synthetic",)  # fmt: skip
    assert facts.patients == {"train": 4, "val": 1, "test": 1} and facts.lesion_boxes == {"test": 3}
    line = facts.line()
    assert "profile smoke (4 iterations)" in line and "test: 1 patient, 3 lesion boxes" in line
    # a profile file: captions name the file, the facts keep its path
    mine = replace(facts, profiles=(str(tmp_path / "profiles" / "mine.json"),))
    assert mine.line().startswith("profile mine.json (4 iterations)")
    assert mine.to_dict()["profiles"] == (str(tmp_path / "profiles" / "mine.json"),)
    page = write_report(runs, tmp_path / "report.html").read_text()
    assert "Table II: liver Dice" in page and "0.9800" in page and "+0.0178" in page
    assert "What produced these numbers" in page and "3 lesion boxes evaluated" in page
    assert "280 real patients" in page
