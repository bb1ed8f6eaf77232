"""The paper's tables for the user's runs, beside the published values.

Every table keeps the paper's rows (sections and row labels as printed, then any extra model
of the runs) and columns; each row comes three times: ours, published, difference (ours minus
published), plus a "95% CI" line under ours when the runs carry confidence intervals. Renderers
write CSV, Markdown and LaTeX (booktabs); the rendered tables (and the HTML report) show:

- an undefined value (e.g. eq. 6 with registered AP 0) as "n/a", a missing one as "–";
- a value beyond ``flag_above`` (sensitivity tables: :data:`EXTREME`, 100 %) with the mark
  :data:`FLAG` and a note under the table;
- the paper's own "(ours)" as "(proposed)" (:func:`display_label`): here "ours" is your run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis.published import AVERAGE, METRICS, VARIANT_LABELS
from benchmark.atomic import write_text

KINDS = ("ours", "published", "difference")
CI_KIND = "95% CI"
SPLIT_HEADERS = {"val": "Validation Set(%)", "test": "Test Set(%)", "all": "Average"}
#: |sensitivity| (%) above which a cell is flagged: eq. 6 cannot exceed 100 %, and below -100 %
#: the unregistered AP is over twice the registered one (a registered AP near 0, not robustness)
EXTREME = 100.0
FLAG = "(!)"
UNDEFINED = "n/a"
OURS_LABEL = re.compile(r"\(ours\)", re.IGNORECASE)
NOTES = {
    FLAG: f"{FLAG}: |value| > {EXTREME:.0f} %: eq. 6 is unstable here (registered AP near 0 or a "
    "small test split); do not read it as a measure of robustness.",
    UNDEFINED: f"{UNDEFINED}: undefined (eq. 6 needs a registered AP > 0 and enough lesion "
    "boxes; sensitivity.csv gives the reason).",
}


@dataclass(frozen=True)
class TableSpec:
    """A paper table: which published table, which registrations, which columns."""

    name: str
    title: str
    registrations: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    flag_above: float | None = None  # |value| beyond which a cell is flagged


SPECS = {
    "I": TableSpec("I", "AP (%) on the unregistered cohort", ("unregistered",), METRICS),
    "S1": TableSpec(
        "S1", "AP (%) on the registered cohorts", ("rigid", "affine", "nonrigid"), METRICS
    ),
    "S2": TableSpec(
        "S2",
        "Sensitivity (%, eq. 6) to registration mismatch",
        ("rigid", "affine", "nonrigid"),
        (*METRICS, AVERAGE),
        EXTREME,
    ),
    "III": TableSpec(
        "III",
        "Ablations of GSSD++ and PixelLink++, AP (%) on the unregistered cohort",
        ("unregistered",),
        (("val", "IoU50"), ("val", "IoBB50"), ("test", "IoU50"), ("test", "IoBB50")),
    ),
}


def comparison(
    spec: TableSpec,
    ours: pd.DataFrame,
    published: pd.DataFrame,
    labels: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Tidy ours / published / difference per (section, row, column) in the paper's order.

    ``ours``: ``model, registration, split, metric, value`` (several rows of a cell, e.g.
    seeds, are averaged; a cell whose rows are all NaN is undefined, one without rows
    missing), optionally ``ci_low, ci_high`` (kept when a cell has one row) and
    ``undefined_reason`` (why ``value`` is NaN). Models of ``ours`` absent from the published
    table are appended to their section with ``labels[model]`` (or the model name) as row
    label. Columns: the keys, :data:`KINDS`, ``ci_low``, ``ci_high``, ``undefined_reason``.
    """
    labels = labels or {}
    pub = published[published["registration"].isin(spec.registrations)]
    rows = list(dict.fromkeys(zip(pub["registration"], pub["model"], strict=True)))
    section_of = dict(zip(pub["registration"], pub["section"], strict=True))
    label_of = dict(
        zip(zip(pub["registration"], pub["model"], strict=True), pub["row_label"], strict=True)
    )
    mine = ours[ours["registration"].isin(spec.registrations)]
    known_models = set(pub["model"])
    for key in dict.fromkeys(zip(mine["registration"], mine["model"], strict=True)):
        if key not in label_of and (spec.name != "III" or key[1] in known_models):
            rows.append(key)
            label_of[key] = labels.get(key[1], key[1])
    if spec.name == "III":  # sections are the full models, not registrations
        section_of = dict(zip(pub["model"], pub["section"], strict=True))
    pub_value = pub.set_index(["registration", "model", "split", "metric"])["value"]
    our_cells = _cells(mine)
    records = []
    for reg, model in rows:
        section = section_of.get(model if spec.name == "III" else reg, VARIANT_LABELS[reg])
        for split, metric in spec.columns:
            key = (reg, model, split, metric)
            a, low, high, reason = our_cells.get(key, (math.nan, math.nan, math.nan, ""))
            b = pub_value.get(key, math.nan)
            records.append(
                (section, label_of[(reg, model)], reg, model, split, metric, a, b, a - b)
                + (low, high, reason)
            )
    columns = ["section", "row_label", "registration", "model", "split", "metric"]
    return pd.DataFrame(
        records, columns=[*columns, *KINDS, "ci_low", "ci_high", "undefined_reason"]
    )


def _cells(ours: pd.DataFrame) -> dict[tuple, tuple[float, float, float, str]]:
    """(registration, model, split, metric) -> (mean value, CI low, CI high, undefined reason)."""
    out = {}
    for key, part in ours.groupby(["registration", "model", "split", "metric"], sort=False):
        value = float(part["value"].astype(float).mean())  # NaN only when every row is NaN
        low = high = math.nan
        if len(part) == 1 and {"ci_low", "ci_high"} <= set(part.columns):
            low, high = float(part["ci_low"].iloc[0]), float(part["ci_high"].iloc[0])
        reason = ""
        if math.isnan(value):  # a row without a value: undefined, not missing
            found = [
                r for r in part.get("undefined_reason", []) if isinstance(r, str) and r.strip()
            ]
            reason = "; ".join(dict.fromkeys(found)) or "undefined"
        out[key] = (value, low, high, reason)
    return out


def layout(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Paper layout: one line per row label and kind, one column per paper column.

    An undefined value of ours (NaN with an ``undefined_reason``) becomes :data:`UNDEFINED`;
    a row with any confidence interval gets a :data:`CI_KIND` line ("[low, high]") after ours.
    """
    headers = [header(split, metric) for split, metric in spec.columns]
    lines = []
    for (section, label), part in frame.groupby(["section", "row_label"], sort=False):
        cells = part.set_index(["split", "metric"])
        with_ci = "ci_low" in part.columns and bool(
            (part["ci_low"].notna() & part["ci_high"].notna()).any()
        )
        for kind in [KINDS[0], CI_KIND, *KINDS[1:]] if with_ci else KINDS:
            values = [
                _layout_cell(cells.loc[c], kind) if c in cells.index else math.nan
                for c in spec.columns
            ]
            lines.append([section, label, kind, *values])
    return pd.DataFrame(lines, columns=["section", "Methods", "value", *headers])


def _layout_cell(cell: pd.Series, kind: str) -> object:
    if kind == CI_KIND:
        low, high = cell["ci_low"], cell["ci_high"]
        if pd.isna(low) or pd.isna(high):
            return math.nan
        return f"[{float(low):.2f}, {float(high):.2f}]"
    value = cell[kind]
    reason = cell.get("undefined_reason", "")
    if kind == KINDS[0] and pd.isna(value) and isinstance(reason, str) and reason.strip():
        return UNDEFINED
    return value


def write_table(
    table: pd.DataFrame,
    stem: Path,
    title: str,
    groups: list[tuple[str, int]],
    digits: int = 2,
    flag_above: float | None = None,
) -> list[Path]:
    """Write ``stem``.csv/.md/.tex atomically; ``groups``: header spans over the value columns;
    ``flag_above``: mark values whose magnitude exceeds it (the CSV keeps plain numbers)."""
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.4f"))
    write_text(paths[1], to_markdown(table, title, digits, flag_above))
    write_text(paths[2], to_latex(table, title, groups, digits, flag_above))
    return paths


def groups_of(spec: TableSpec) -> list[tuple[str, int]]:
    """Header spans (Validation Set(%), Test Set(%), Average) over the value columns."""
    spans: list[tuple[str, int]] = []
    for split, _ in spec.columns:
        label = SPLIT_HEADERS[split]
        if spans and spans[-1][0] == label:
            spans[-1] = (label, spans[-1][1] + 1)
        else:
            spans.append((label, 1))
    return spans


def column_names(table: pd.DataFrame, groups: list[tuple[str, int]] | None) -> list[str]:
    """Header of each value column under its group: the metric ("IoU30"), or "" where the
    group header already says it all (the single "Average" column)."""
    text_cols = [c for c in ("Methods", "value") if c in table.columns]
    value_cols = [c for c in table.columns if c not in ("section", *text_cols)]
    if not groups:
        return value_cols
    spans = [g for g, n in groups for _ in range(n)]
    names = [c.split(" ")[-1] for c in value_cols]
    return ["" if name == span else name for name, span in zip(names, spans, strict=False)]


def notes(table: pd.DataFrame, flag_above: float | None = None) -> list[str]:
    """The notes a rendered table needs (:data:`NOTES`): flagged and undefined cells."""
    values = table.drop(columns=[c for c in ("section", "Methods", "value") if c in table])
    cells = values.to_numpy(object).ravel()
    out = []
    if flag_above is not None and any(_beyond(v, flag_above) for v in cells):
        out.append(NOTES[FLAG])
    if any(isinstance(v, str) and v == UNDEFINED for v in cells):
        out.append(NOTES[UNDEFINED])
    return out


def to_markdown(
    table: pd.DataFrame, title: str, digits: int = 2, flag_above: float | None = None
) -> str:
    """GitHub Markdown; section rows in bold, repeated row labels left blank, notes below."""
    text_cols = [c for c in ("Methods", "value") if c in table.columns]
    value_cols = [c for c in table.columns if c not in ("section", *text_cols)]
    lines = [f"**{title}**", "", "| " + " | ".join([*text_cols, *value_cols]) + " |"]
    lines.append("|" + "---|" * len(text_cols) + "---:|" * len(value_cols))
    section, label = None, None
    for row in table.to_dict("records"):
        if row.get("section") and row["section"] != section:
            section = row["section"]
            lines.append(f"| **{section}** |" + " |" * (len(text_cols) + len(value_cols) - 1))
        shown = "" if row["Methods"] == label else display_label(row["Methods"])
        label = row["Methods"]
        texts = [shown] + ([row["value"]] if "value" in row else [])
        cells = [
            format_cell(
                row[c], cell_kind(row.get("value"), c), digits=digits, flag_above=flag_above
            )
            for c in value_cols
        ]
        lines.append("| " + " | ".join([*texts, *cells]) + " |")
    found = notes(table, flag_above)
    return "\n".join(lines + ([""] + found if found else [])) + "\n"


def to_latex(
    table: pd.DataFrame,
    title: str,
    groups: list[tuple[str, int]],
    digits: int = 2,
    flag_above: float | None = None,
) -> str:
    """A booktabs ``table`` environment in the paper's layout, notes below the rule."""
    text_cols = [c for c in ("Methods", "value") if c in table.columns]
    value_cols = [c for c in table.columns if c not in ("section", *text_cols)]
    width = len(text_cols) + len(value_cols)
    out = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_tex(title)}}}",
        "\\begin{tabular}{" + "l" * len(text_cols) + "r" * len(value_cols) + "}",
        "\\toprule",
    ]
    if groups:
        spans = [f"\\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in groups]
        out.append(" & ".join([""] * len(text_cols) + spans) + " \\\\")
    header = [_tex(c if c != "value" else "") for c in text_cols] + [
        _tex(c) for c in column_names(table, groups)
    ]
    out += [" & ".join(header) + " \\\\", "\\midrule"]
    section, label = None, None
    for row in table.to_dict("records"):
        if row.get("section") and row["section"] != section:
            section = row["section"]
            out.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_tex(section)}}}}} \\\\")
        shown = "" if row["Methods"] == label else display_label(row["Methods"])
        label = row["Methods"]
        texts = [_tex(shown)] + ([_tex(row["value"])] if "value" in row else [])
        cells = [
            _tex(format_cell(row[c], cell_kind(row.get("value"), c), "--", digits, flag_above))
            for c in value_cols
        ]
        out.append(" & ".join([*texts, *cells]) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    out += [f"\\par\\footnotesize {_tex(n)}" for n in notes(table, flag_above)]
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def header(split: str, metric: str) -> str:
    """Column header of a (split, metric) pair: "val IoU30", "Average"."""
    return "Average" if (split, metric) == AVERAGE else f"{split} {metric}"


def cell_kind(kind: str | None, column: str) -> str | None:
    """How a cell is formatted: by its row kind, or "difference" for a "... difference" column
    (Table II's layout: one column per kind)."""
    if kind in (*KINDS, CI_KIND):
        return kind
    return "difference" if str(column).endswith("difference") else None


def display_label(label: object) -> str:
    """A row label as shown: the paper's "(ours)" (its authors' models) becomes "(proposed)",
    since in this tool's tables "ours" is the user's run."""
    return OURS_LABEL.sub("(proposed)", str(label))


def format_cell(
    value: object,
    kind: str | None = None,
    missing: str = "–",
    digits: int = 2,
    flag_above: float | None = None,
) -> str:
    """A table cell: text as is, NaN as ``missing``, differences signed, ``digits`` decimals,
    :data:`FLAG` after a value whose magnitude exceeds ``flag_above``."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return str(value)
    flag = f" {FLAG}" if flag_above is not None and _beyond(value, flag_above) else ""
    value = round(float(value), digits) + 0.0  # no "-0.00"
    text = f"{value:+.{digits}f}" if kind == "difference" else f"{value:.{digits}f}"
    return text + flag


def _beyond(value: object, bound: float) -> bool:
    """A number (not text, not NaN) whose magnitude exceeds ``bound``."""
    if isinstance(value, str | bool) or value is None:
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and abs(number) > bound


def _tex(text: object) -> str:
    text = str(text)
    for char, repl in (
        ("\\", "\\textbackslash{}"),
        ("&", "\\&"),
        ("%", "\\%"),
        ("_", "\\_"),
        ("#", "\\#"),
    ):
        text = text.replace(char, repl)
    return text.replace("†", "$^\\dagger$").replace("–", "--")
