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
from benchmark.analysis.estimates import DEFAULT_BOOTSTRAP
from benchmark.analysis.facts import PAPER_CAPTION, RunFacts
from benchmark.analysis.pipeline import analyze_runs
from benchmark.analysis.runs import collect_runs
from benchmark.analysis.sensitivity import MIN_LESION_BOXES
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
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px;
       padding: 0 1.5em; color: #222; line-height: 1.4; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 0.3em; }
table.paper { width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #eef; text-align: center; }
td.text { text-align: left; white-space: normal; }
tr.section td { background: #f4f4f8; font-weight: bold; text-align: left; }
tr.published td { color: #555; } tr.difference td { color: #a33; }
tr.ci td { color: #555; font-size: 11px; }
td.flag { background: #fde0dc; color: #a00; font-weight: bold; }
td.na { color: #a33; font-style: italic; }
table.facts th { text-align: left; background: #f4f4f8; }
table.facts td { text-align: left; white-space: normal; }
p.note { font-size: 12px; color: #444; margin: 0.2em 0; }
img { max-width: 100%; } .missing { color: #a33; } pre { background: #f6f6f6; padding: 0.5em; }
"""


def write_report(
    runs_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cohort: str | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_boxes: int = MIN_LESION_BOXES,
) -> Path:
    """Analyse ``runs_root`` and write the HTML report to ``out`` atomically."""
    start = time.perf_counter()
    runs = collect_runs(runs_root).select(cohort)
    with tempfile.TemporaryDirectory() as tmp:
        result = analyze_runs(
            runs_root, tmp, cohort=cohort, bootstrap=bootstrap, seed=seed, min_boxes=min_boxes
        )
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
        "<h2>What produced these numbers</h2>",
        _facts(result.facts),
    ]
    for name in ("I", "S1", "S2", "II", "III"):
        if name in result.tables:
            spec = tables.SPECS.get(name)
            table = _table(
                result.tables[name],
                tables.groups_of(spec) if spec else None,
                digits=4 if name == "II" else 2,
                flag_above=spec.flag_above if spec else None,
                cls="paper",
            )
            parts += [f"<h2>{TITLES[name]}</h2>", table]
        elif name == "II":
            parts += [f"<h2>{TITLES[name]}</h2>", '<p class="missing">Not found: run '
                      "<code>register</code> or <code>run</code> on a registered variant.</p>"]  # fmt: skip
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
        "<h2>Missing</h2>",
        _list(result.missing, "missing") if result.missing else "<p>Nothing missing.</p>",
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


def _facts(facts: RunFacts) -> str:
    """The settings and data behind the numbers, and the paper's for comparison."""
    splits = [
        (f"{split} split", _split_text(facts, split))
        for split in ("train", "val", "test")
        if split in facts.patients
    ]
    rows = [
        ("profile", ", ".join(facts.profiles) or "not recorded"),
        ("iterations", ", ".join(map(str, facts.iterations)) or "not recorded"),
        ("cohort", f"{', '.join(facts.cohorts)} ({', '.join(facts.cohort_kinds) or 'kind not recorded'})"),
        *splits,
        *((f"evaluated ({v})", "; ".join(f"{s}: {c['patients']} patients, {c['lesion_boxes']} lesion boxes" for s, c in e.items())) for v, e in facts.evaluated.items()),
        ("seeds", ", ".join(map(str, facts.seeds)) or "none"),
        ("input", " / ".join(f"{n} px" for n in facts.input_sizes) or "not recorded"),
        ("device", ", ".join(facts.devices) or "not recorded"),
        ("95% CI", f"{facts.bootstrap} patient resamples, paired between variants, seeds pooled" if facts.bootstrap else "none (bootstrap off)"),
        ("differs from the paper", "; ".join(facts.differences()) or "no"),
        ("for comparison", PAPER_CAPTION),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _split_text(facts: RunFacts, split: str) -> str:
    n = facts.patients[split]
    text = f"{n} patient{'' if n == 1 else 's'}"
    if split in facts.lesion_boxes:
        text += f", {facts.lesion_boxes[split]} lesion boxes evaluated"
    return text


def _table(
    frame: pd.DataFrame,
    groups: list[tuple[str, int]] | None = None,
    digits: int = 2,
    flag_above: float | None = None,
    cls: str = "",
) -> str:
    """HTML table in the paper's layout: section rows, header spans, repeated labels blank,
    flagged and undefined cells marked, the notes they need below it."""
    shown = frame.drop(columns=[c for c in ("section",) if c in frame.columns])
    text = [c for c in ("Methods", "value") if c in shown.columns]
    values = [c for c in shown.columns if c not in text]
    names = tables.column_names(shown, groups)
    if groups:
        spans, sub = "", []
        for (group, n), start in zip(groups, _starts(groups), strict=True):
            if n == 1 and names[start] == "":
                spans += f'<th rowspan="2">{html.escape(group)}</th>'
            else:
                spans += f'<th colspan="{n}">{html.escape(group)}</th>'
                sub += names[start : start + n]
        head = f'<tr><th colspan="{len(text)}" rowspan="2"></th>{spans}</tr>'
        head += "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in sub) + "</tr>"
    else:
        head = (
            "<tr>"
            + "".join(f"<th>{html.escape('' if c == 'value' else c)}</th>" for c in text)
            + "".join(f"<th>{html.escape(c)}</th>" for c in values)
            + "</tr>"
        )
    rows, section, label = [], None, None
    for record, full in zip(shown.to_dict("records"), frame.to_dict("records"), strict=True):
        if full.get("section") and full["section"] != section:
            section = full["section"]
            rows.append(
                f'<tr class="section"><td colspan="{len(shown.columns)}">'
                f"{html.escape(str(section))}</td></tr>"
            )
        kind = str(record.get("value", ""))
        if "Methods" in record:
            record["Methods"], label = (
                ("" if record["Methods"] == label else tables.display_label(record["Methods"])),
                record["Methods"],
            )
        cells = "".join(
            f'<td class="text">{html.escape(str(record[c]))}</td>' for c in text
        ) + "".join(_cell(record[c], tables.cell_kind(kind, c), digits, flag_above) for c in values)
        row_class = "ci" if kind == tables.CI_KIND else kind
        rows.append(f'<tr class="{html.escape(row_class)}">{cells}</tr>')
    table = f'<table class="{cls}"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    return table + "".join(
        f'<p class="note">{html.escape(n)}</p>' for n in tables.notes(frame, flag_above)
    )


def _cell(value: object, kind: str | None, digits: int, flag_above: float | None) -> str:
    text = tables.format_cell(value, kind, digits=digits, flag_above=flag_above)
    if text.endswith(tables.FLAG):
        return f'<td class="flag">{html.escape(text)}</td>'
    if text == tables.UNDEFINED:
        return f'<td class="na">{html.escape(text)}</td>'
    return f"<td>{html.escape(text)}</td>"


def _starts(groups: list[tuple[str, int]]) -> list[int]:
    starts, at = [], 0
    for _, n in groups:
        starts.append(at)
        at += n
    return starts


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
