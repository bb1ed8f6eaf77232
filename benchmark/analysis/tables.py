"""The paper's tables for the user's runs, beside the published values.

Every table keeps the paper's rows (sections and row labels as printed, then any extra model
of the runs) and columns; each row comes three times: ours, published, difference (ours minus
published). Renderers write CSV, Markdown and LaTeX (booktabs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.analysis.published import AVERAGE, METRICS, VARIANT_LABELS
from benchmark.atomic import write_text

KINDS = ("ours", "published", "difference")
SPLIT_HEADERS = {"val": "Validation Set(%)", "test": "Test Set(%)", "all": "Average"}


@dataclass(frozen=True)
class TableSpec:
    """A paper table: which published table, which registrations, which columns."""

    name: str
    title: str
    registrations: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]


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

    ``ours``: ``model, registration, split, metric, value`` (one value per cell, e.g. the mean
    over seeds). Models of ``ours`` absent from the published table are appended to their
    section with ``labels[model]`` (or the model name) as row label.
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
    our_value = mine.groupby(["registration", "model", "split", "metric"])["value"].mean()
    records = []
    for reg, model in rows:
        section = section_of.get(model if spec.name == "III" else reg, VARIANT_LABELS[reg])
        for split, metric in spec.columns:
            key = (reg, model, split, metric)
            a, b = our_value.get(key, math.nan), pub_value.get(key, math.nan)
            records.append(
                (section, label_of[(reg, model)], reg, model, split, metric, a, b, a - b)
            )
    columns = ["section", "row_label", "registration", "model", "split", "metric"]
    return pd.DataFrame(records, columns=[*columns, *KINDS])


def layout(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Paper layout: one line per row label and kind, one column per paper column."""
    headers = [header(split, metric) for split, metric in spec.columns]
    lines = []
    for (section, label), part in frame.groupby(["section", "row_label"], sort=False):
        cells = part.set_index(["split", "metric"])
        for kind in KINDS:
            values = [cells.loc[c, kind] if c in cells.index else math.nan for c in spec.columns]
            lines.append([section, label, kind, *values])
    return pd.DataFrame(lines, columns=["section", "Methods", "value", *headers])


def write_table(
    table: pd.DataFrame, stem: Path, title: str, groups: list[tuple[str, int]], digits: int = 2
) -> list[Path]:
    """Write ``stem``.csv/.md/.tex atomically; ``groups``: header spans over the value columns."""
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    write_text(paths[0], table.to_csv(index=False, float_format="%.4f"))
    write_text(paths[1], to_markdown(table, title, digits))
    write_text(paths[2], to_latex(table, title, groups, digits))
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


def to_markdown(table: pd.DataFrame, title: str, digits: int = 2) -> str:
    """GitHub Markdown; section rows in bold, repeated row labels left blank."""
    text_cols = [c for c in ("Methods", "value") if c in table.columns]
    value_cols = [c for c in table.columns if c not in ("section", *text_cols)]
    lines = [f"**{title}**", "", "| " + " | ".join([*text_cols, *value_cols]) + " |"]
    lines.append("|" + "---|" * len(text_cols) + "---:|" * len(value_cols))
    section, label = None, None
    for row in table.to_dict("records"):
        if row.get("section") and row["section"] != section:
            section = row["section"]
            lines.append(f"| **{section}** |" + " |" * (len(text_cols) + len(value_cols) - 1))
        shown = "" if row["Methods"] == label else row["Methods"]
        label = row["Methods"]
        texts = [shown] + ([row["value"]] if "value" in row else [])
        lines.append(
            "| "
            + " | ".join(
                [
                    *texts,
                    *(format_cell(row[c], row.get("value"), digits=digits) for c in value_cols),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def to_latex(
    table: pd.DataFrame, title: str, groups: list[tuple[str, int]], digits: int = 2
) -> str:
    """A booktabs ``table`` environment in the paper's layout."""
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
        _tex(c.split(" ")[-1]) for c in value_cols
    ]
    out += [" & ".join(header) + " \\\\", "\\midrule"]
    section, label = None, None
    for row in table.to_dict("records"):
        if row.get("section") and row["section"] != section:
            section = row["section"]
            out.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{_tex(section)}}}}} \\\\")
        shown = "" if row["Methods"] == label else row["Methods"]
        label = row["Methods"]
        texts = [_tex(shown)] + ([_tex(row["value"])] if "value" in row else [])
        out.append(
            " & ".join(
                [*texts, *(format_cell(row[c], row.get("value"), "--", digits) for c in value_cols)]
            )
            + " \\\\"
        )
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


def header(split: str, metric: str) -> str:
    """Column header of a (split, metric) pair: "val IoU30", "Average"."""
    return "Average" if (split, metric) == AVERAGE else f"{split} {metric}"


def format_cell(value: object, kind: str | None = None, missing: str = "–", digits: int = 2) -> str:
    """A table cell: text as is, NaN as ``missing``, differences signed, ``digits`` decimals."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, int):
        return str(value)
    value = round(float(value), digits) + 0.0  # no "-0.00"
    return f"{value:+.{digits}f}" if kind == "difference" else f"{value:.{digits}f}"


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
    return text.replace("†", "$^\\dagger$")
