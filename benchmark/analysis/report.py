"""One self-contained HTML report of a run folder: no external files, figures as base64 PNG."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import pandas as pd

from benchmark.analysis import tables
from benchmark.analysis.audit import audit_published
from benchmark.analysis.pipeline import analyze_runs
from benchmark.analysis.runs import collect_runs
from benchmark.atomic import write_text

PACKAGES = (
    "phasebench",
    "numpy",
    "pandas",
    "scipy",
    "torch",
    "torchvision",
    "matplotlib",
    "seaborn",
)
TITLES = {
    "I": "Table I: AP (%) on the unregistered cohort",
    "II": "Table II: liver Dice between phases",
    "III": "Table III: ablations (unregistered cohort)",
    "S1": "Table S1: AP (%) on the registered cohorts",
    "S2": "Table S2: sensitivity (%, eq. 6)",
}
STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eef; text-align: center; }
td:first-child, td:nth-child(2) { text-align: left; }
tr.published td { color: #555; } tr.difference td { color: #a33; }
img { max-width: 100%; } .missing { color: #a33; } pre { background: #f6f6f6; padding: 0.5em; }
"""


def write_report(
    runs_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cohort: str | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> Path:
    """Analyse ``runs_root`` and write the HTML report to ``out`` atomically."""
    start = time.perf_counter()
    runs = collect_runs(runs_root).select(cohort)
    with tempfile.TemporaryDirectory() as tmp:
        result = analyze_runs(runs_root, tmp, cohort=cohort, bootstrap=bootstrap, seed=seed)
        figures = {
            p.stem: base64.b64encode(p.read_bytes()).decode()
            for p in result.figures
            if p.suffix == ".png"
        }
    audit = audit_published()
    parts = [
        f"<h1>phasebench report: {html.escape(str(Path(runs_root)))}</h1>",
        f"<p>Generated {dt.datetime.now().isoformat(timespec='seconds')}; "
        f"{len(runs.runs)} finished runs of cohort(s) {html.escape(', '.join(runs.cohorts) or 'none')}.</p>",
        "<h2>Missing</h2>",
        _list(result.missing, "missing") if result.missing else "<p>Nothing missing.</p>",
    ]
    for name in ("I", "S1", "S2", "II", "III"):
        if name in result.tables:
            groups = tables.groups_of(tables.SPECS[name]) if name in tables.SPECS else None
            table = _table(result.tables[name], groups, digits=4 if name == "II" else 2)
            parts += [f"<h2>{TITLES[name]}</h2>", table]
    for stem, data in figures.items():
        parts += [
            "<h2>Fig. 5: average sensitivity per model and registration method</h2>",
            f'<img alt="{stem}" src="data:image/png;base64,{data}">',
        ]
    from benchmark.robustness.figure import ladder_figures

    for path in ladder_figures(Path(runs_root)):
        data = base64.b64encode(path.read_bytes()).decode()
        parts += [
            f"<h2>Robustness ladder {html.escape(path.parent.name)}: AP against misalignment</h2>",
            f'<img alt="robustness ladder" src="data:image/png;base64,{data}">',
        ]
    parts += [
        "<h2>Audit of the published tables</h2>",
        _list([f"{f.title} ({f.where}): {f.message}" for f in audit.findings]),
    ]
    parts += ["<h2>Timing</h2>", _table(_timing(runs))]
    parts += ["<h2>Run configurations</h2>"] + [
        f"<details><summary>{html.escape(f'{r.variant} / {r.model} / seed{r.seed}')}</summary>"
        f"<pre>{html.escape(json.dumps(r.config, indent=2, sort_keys=True), quote=False)}</pre></details>"
        for r in runs.runs
    ]
    parts += ["<h2>Software</h2>", _table(_versions())]
    parts.append(f"<p>Analysis took {time.perf_counter() - start:.1f} s.</p>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>phasebench report</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    out = Path(out)
    write_text(out, page)
    return out


def _table(
    frame: pd.DataFrame, groups: list[tuple[str, int]] | None = None, digits: int = 2
) -> str:
    """HTML table in the paper's layout: section rows, header spans, repeated labels blank."""
    shown = frame.drop(columns=[c for c in ("section",) if c in frame.columns])
    text = [c for c in ("Methods", "value") if c in shown.columns]
    head = ""
    if groups:
        spans = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in groups)
        head = f'<tr><th colspan="{len(text)}"></th>{spans}</tr>'
    names = [c.split(" ")[-1] if groups and c not in text else c for c in shown.columns]
    head += (
        "<tr>"
        + "".join(f"<th>{html.escape('' if c == 'value' else c)}</th>" for c in names)
        + "</tr>"
    )
    rows, section, label = [], None, None
    for record, full in zip(shown.to_dict("records"), frame.to_dict("records"), strict=True):
        if full.get("section") and full["section"] != section:
            section = full["section"]
            rows.append(
                f'<tr><td colspan="{len(names)}"><b>{html.escape(str(section))}</b></td></tr>'
            )
        kind = str(record.get("value", ""))
        if "Methods" in record:
            record["Methods"], label = (
                ("" if record["Methods"] == label else record["Methods"]),
                record["Methods"],
            )
        cells = "".join(
            f"<td>{html.escape(tables.format_cell(v, kind, digits=digits))}</td>"
            for v in record.values()
        )
        rows.append(f'<tr class="{html.escape(kind)}">{cells}</tr>')
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _list(items: list[str], cls: str = "") -> str:
    return f'<ul class="{cls}">' + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def _timing(runs) -> pd.DataFrame:
    rows = [
        {
            "variant": r.variant,
            "model": r.model,
            "seed": r.seed,
            "seconds": r.metrics.get("seconds", float("nan")),
            "images_per_second": r.metrics.get("images_per_second", float("nan")),
            "best_iteration": r.metrics.get("best_iteration", ""),
        }
        for r in runs.runs
    ]
    return pd.DataFrame(
        rows, columns=["variant", "model", "seed", "seconds", "images_per_second", "best_iteration"]
    )


def _versions() -> pd.DataFrame:
    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["software", "version"])
