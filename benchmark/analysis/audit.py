"""Consistency audit of the published tables (paper Tables I, III, S1, S2 and Fig. 5).

Every Table S2 cell is recomputed with eq. 6 from Table I (unregistered AP) and Table S1
(registered AP). All printed numbers carry two decimals, so a cell counts as consistent when
the printed value lies inside the interval eq. 6 spans over the +-0.005 rounding of both inputs
(plus its own rounding). Inconsistent cells are then explained:

* the same model and metric off in every registration, with one unregistered AP that would
  reproduce all printed sensitivities -> the Table I value is the likely typo;
* a whole S2 row off while its printed Average agrees with its printed cells (so S2 is
  internally consistent) -> Table S1 holds the error; the S1 row S2 implies is searched among
  the printed S1 rows to detect a misplaced or duplicated row;
* a printed Average that disagrees with its own cells -> Table S2 holds the error.

Fig. 5 plots the per-row averages, so it is audited through the Average column: printed, mean
of the printed cells and mean of the cells recomputed from Tables I and S1.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.analysis.published import (
    AVERAGE,
    REGISTRATIONS,
    VARIANT_LABELS,
    load_table,
)
from benchmark.analysis.tables import format_cell

HALF_ULP = 0.005  # half a unit of the printed last digit
MATCH_TOL = 0.03  # implied-value agreement (points) for explanations


@dataclass
class Finding:
    """One inconsistency: the table most likely at fault, where, and why."""

    table: str
    where: str
    message: str

    @property
    def title(self) -> str:
        """Printable name of the table or figure ("Table S1", "Fig. 5")."""
        return self.table if self.table.startswith("Fig") else f"Table {self.table}"


@dataclass
class Audit:
    """Result of :func:`audit_published`."""

    cells: pd.DataFrame  # one row per S2 cell: printed, recomputed, bounds, consistent
    averages: pd.DataFrame  # one row per S2 row: printed Average vs means (Fig. 5 bars)
    findings: list[Finding] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (claim, holds, detail)

    @property
    def inconsistent(self) -> pd.DataFrame:
        return self.cells[~self.cells["consistent"]]

    def to_markdown(self) -> str:
        """Human-readable audit with the explanations and the inconsistent cells."""
        n, bad = len(self.cells), len(self.inconsistent)
        lines = [
            "# Audit of the published tables",
            "",
            f"Table S2 cells recomputed with eq. 6 from Tables I and S1: {n - bad} of {n} "
            "consistent within rounding.",
            "",
            "## Findings",
            "",
        ]
        lines += [f"- **{f.title}** ({f.where}): {f.message}" for f in self.findings] or ["- none"]
        lines += ["", "## Inconsistent Table S2 cells", ""]
        cols = [
            "registration",
            "row_label",
            "split",
            "metric",
            "printed",
            "recomputed",
            "difference",
        ]
        lines += _markdown(self.inconsistent[cols])
        lines += ["", "## Fig. 5 averages (Table S2 Average column)", ""]
        cols = [
            "registration",
            "row_label",
            "printed",
            "mean_printed",
            "mean_recomputed",
            "consistent",
            "matches_recomputed",
        ]
        lines += _markdown(self.averages[cols])
        lines += ["", "## Claims in the text", ""]
        lines += [
            f"- [{'ok' if ok else 'FAILS'}] {claim}: {detail}" for claim, ok, detail in self.checks
        ]
        return "\n".join(lines) + "\n"


def audit_published(root: str | os.PathLike[str] | None = None) -> Audit:
    """Recompute Table S2 from Tables I and S1 and explain every disagreement."""
    t1, s1, s2 = load_table("I", root), load_table("S1", root), load_table("S2", root)
    findings = _label_findings(t1, s1, s2)
    cells = _cells(t1, s1, s2)
    averages = _averages(cells, s2)
    typos, explained = _table1_findings(cells)
    findings += typos
    findings += _s1_findings(cells, averages, s1, explained)
    findings += [
        Finding(
            "S2",
            f"{r.registration}, {r.row_label}",
            "printed Average "
            f"{r.printed:.2f} differs from the mean of its printed cells {r.mean_printed:.2f}",
        )
        for r in averages.itertuples()
        if not r.consistent
    ]
    findings += [
        Finding(
            "Fig. 5",
            f"{VARIANT_LABELS[r.registration]} method, {r.row_label}",
            f"the bar (printed Average {r.printed:.2f}) follows Table S2; recomputed from Tables "
            f"I and S1 it would be {r.mean_recomputed:.2f}",
        )
        for r in averages.itertuples()
        if not r.matches_recomputed
    ]
    findings += _table3_findings(t1, load_table("III", root))
    return Audit(cells, averages, findings, _claims(t1, averages))


def _cells(t1: pd.DataFrame, s1: pd.DataFrame, s2: pd.DataFrame) -> pd.DataFrame:
    keys = ["model", "split", "metric"]
    u = t1[[*keys, "value"]].rename(columns={"value": "u"})
    r = s1[[*keys, "registration", "value"]].rename(columns={"value": "r"})
    cells = s2[s2["metric"] != AVERAGE[1]].rename(columns={"value": "printed"})
    cells = cells.merge(u, on=keys, how="left").merge(r, on=[*keys, "registration"], how="left")
    cells["recomputed"] = 100.0 * (1.0 - cells["u"] / cells["r"])
    cells["difference"] = cells["printed"] - cells["recomputed"]
    lo = 100.0 * (1.0 - (cells["u"] + HALF_ULP) / (cells["r"] - HALF_ULP))
    hi = 100.0 * (1.0 - (cells["u"] - HALF_ULP) / (cells["r"] + HALF_ULP))
    cells["low"], cells["high"] = lo, hi
    cells["consistent"] = (cells["printed"] >= lo - HALF_ULP) & (cells["printed"] <= hi + HALF_ULP)
    # the values each printed sensitivity implies for the other two tables
    s, h = cells["printed"] / 100.0, HALF_ULP / 100.0
    cells["implied_u"] = cells["r"] * (1.0 - s)
    cells["implied_u_low"] = (cells["r"] - HALF_ULP) * (1.0 - s - h)
    cells["implied_u_high"] = (cells["r"] + HALF_ULP) * (1.0 - s + h)
    cells["implied_r"] = cells["u"] / (1.0 - s)
    cells["implied_r_low"] = (cells["u"] - HALF_ULP) / (1.0 - s + h)
    cells["implied_r_high"] = (cells["u"] + HALF_ULP) / (1.0 - s - h)
    return cells.reset_index(drop=True)


def _averages(cells: pd.DataFrame, s2: pd.DataFrame) -> pd.DataFrame:
    avg = s2[s2["metric"] == AVERAGE[1]][["registration", "model", "row_label", "value"]]
    means = cells.groupby(["registration", "model"], sort=False).agg(
        mean_printed=("printed", "mean"), mean_recomputed=("recomputed", "mean")
    )
    out = avg.rename(columns={"value": "printed"}).merge(means.reset_index(), how="left")
    out["consistent"] = (out["printed"] - out["mean_printed"]).abs() <= 2 * HALF_ULP
    out["matches_recomputed"] = (out["printed"] - out["mean_recomputed"]).abs() <= MATCH_TOL
    return out.reset_index(drop=True)


def _table1_findings(cells: pd.DataFrame) -> tuple[list[Finding], set[tuple[str, str, str]]]:
    """Same (model, metric) off in every registration, explained by one unregistered value."""
    found, explained = [], set()
    bad = cells[~cells["consistent"]]
    for key, group in bad.groupby(["model", "split", "metric"], sort=False):
        everywhere = cells.set_index(["model", "split", "metric"]).loc[[key]]
        low, high = group["implied_u_low"].max(), group["implied_u_high"].min()
        if len(group) < 2 or len(group) < len(everywhere) or low > high:
            continue
        printed, value = group["u"].iloc[0], group["implied_u"].mean()
        explained.add(key)
        found.append(
            Finding(
                "I",
                f"{group['row_label'].iloc[0]}, {key[1]} {key[2]}",
                f"the S2 cell is off in every registration (printed {_list(group['printed'])}, "
                f"recomputed {_list(group['recomputed'])}), yet all three imply the same unregistered "
                f"AP {value:.2f} instead of the printed {printed:.2f}{_typo(printed, value)}; Tables "
                "S1 and S2 agree with each other, so the Table I value is the likely error.",
            )
        )
    return found, explained


def _s1_findings(
    cells: pd.DataFrame,
    averages: pd.DataFrame,
    s1: pd.DataFrame,
    explained: set[tuple[str, str, str]],
) -> list[Finding]:
    """S2 rows off beyond the Table I typos: S1 row wrong (misplaced?) or S2 row wrong."""
    found = []
    s1_rows = s1.pivot_table(
        index=["registration", "model"], columns=["split", "metric"], values="value", sort=False
    )
    s1_labels = _labels(s1)
    for (reg, model), row in cells.groupby(["registration", "model"], sort=False):
        keys = list(zip(row["model"], row["split"], row["metric"], strict=True))
        bad = row[~row["consistent"].to_numpy() & np.array([k not in explained for k in keys])]
        if bad.empty:
            continue
        row = row.set_index(["split", "metric"])
        avg = averages[(averages["registration"] == reg) & (averages["model"] == model)]
        self_consistent = bool(avg["consistent"].all())
        matches = [
            f"'{s1_labels[other]}' ({VARIANT_LABELS[other[0]]} method)"
            for other, values in s1_rows.iterrows()
            if other != (reg, model)
            and (values[row.index] >= row["implied_r_low"] - HALF_ULP).all()
            and (values[row.index] <= row["implied_r_high"] + HALF_ULP).all()
        ]
        text = (
            f"{len(bad)} of {len(row)} cells disagree with eq. 6 (printed "
            f"{_list(bad['printed'])} vs recomputed {_list(bad['recomputed'])}). "
        )
        if self_consistent:
            text += (
                "The printed Average agrees with the printed cells, so Table S2 is internally "
                "consistent and the S1 row is the likely error"
            )
        else:
            text += "The printed Average disagrees with the printed cells too"
        if matches:
            text += (
                f"; the AP row S2 implies for this model ({_list(row['implied_r'])}) is printed "
                f"in Table S1 as the row of {', '.join(matches)}: a misplaced or duplicated row."
            )
        else:
            text += f"; S2 implies the S1 row {_list(row['implied_r'])}, which no S1 row matches."
        where = f"{VARIANT_LABELS[reg]} method, {row['row_label'].iloc[0]}"
        found.append(Finding("S1" if self_consistent else "S2", where, text))
    return found


def _label_findings(t1: pd.DataFrame, s1: pd.DataFrame, s2: pd.DataFrame) -> list[Finding]:
    """S2 rows whose printed label differs from their S1 counterpart; S2 rows without one."""
    found = []
    s1_labels = _labels(s1)
    t1_models = set(t1["model"])
    for r in s2.drop_duplicates(["registration", "model"]).itertuples():
        key = (r.registration, r.model)
        if key not in s1_labels.index or r.model not in t1_models:
            found.append(
                Finding(
                    "S2",
                    f"{VARIANT_LABELS[r.registration]} method, {r.row_label}",
                    "row has no counterpart in Table I or Table S1",
                )
            )
        elif _norm(s1_labels[key]) != _norm(r.row_label):
            found.append(
                Finding(
                    "S2",
                    f"{VARIANT_LABELS[r.registration]} method, {r.row_label}",
                    f"row label '{r.row_label}' differs from Table S1's '{s1_labels[key]}'; its values "
                    "agree with that S1 row, so it is a shortened label, not a different model.",
                )
            )
    return found


def _table3_findings(t1: pd.DataFrame, t3: pd.DataFrame) -> list[Finding]:
    keys = ["model", "split", "metric"]
    both = t3.merge(t1[[*keys, "value"]], on=keys, suffixes=("", "_t1"))
    off = both[(both["value"] - both["value_t1"]).abs() > HALF_ULP]
    return [
        Finding(
            "III",
            f"{r.row_label}, {r.split} {r.metric}",
            f"printed {r.value:.2f} but Table I prints {r.value_t1:.2f} for the full model",
        )
        for r in off.itertuples()
    ]


def _claims(t1: pd.DataFrame, averages: pd.DataFrame) -> list[tuple[str, bool, str]]:
    """Statements of the text (sec. V-E) checked against the printed and recomputed averages."""
    out = []
    for column, name in (
        ("printed", "printed Average"),
        ("mean_recomputed", "recomputed from I + S1"),
    ):
        wide = averages.pivot_table(
            index="model", columns="registration", values=column, sort=False
        )
        order = wide["nonrigid"] > wide[["rigid", "affine"]].max(axis=1)
        out.append(
            (
                "sensitivity on the non-rigid cohort exceeds rigid and affine for every model",
                bool(order.all()),
                f"{name}: "
                + ("holds" if order.all() else "fails for " + ", ".join(wide.index[~order])),
            )
        )
        positive = wide[list(REGISTRATIONS)] > 0
        failing = [
            f"{m} ({reg})" for m in wide.index for reg in REGISTRATIONS if not positive.loc[m, reg]
        ]
        out.append(
            (
                "every model degrades without registration (positive average sensitivity)",
                not failing,
                f"{name}: " + ("holds" if not failing else "fails for " + ", ".join(failing)),
            )
        )
    ap = t1.set_index(["model", "split", "metric"])["value"]
    for model, base, gain in (("gssd_pp", "gssd", 9.89), ("pixellink_pp", "pixellink_gconv", 9.08)):
        diff = ap[(model, "test", "IoBB50")] - ap[(base, "test", "IoBB50")]
        out.append(
            (
                f"{model} test IoBB50 is {gain:.2f} points above {base}",
                abs(diff - gain) <= 2 * HALF_ULP,
                f"Table I gives {diff:.2f}",
            )
        )
    return out


def _labels(frame: pd.DataFrame) -> pd.Series:
    """(registration, model) -> printed row label."""
    first = frame.drop_duplicates(["registration", "model"])
    return first.set_index(["registration", "model"])["row_label"]


def _norm(label: str) -> str:
    return re.sub(r"\s+|\[\d+\]", "", label).lower()


def _typo(printed: float, value: float) -> str:
    a, b = f"{printed:.2f}", f"{round(value, 2):.2f}"
    if len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) == 1:
        return f" ({b} -> {a} is a one-digit typo)"
    return ""


def _list(values: pd.Series) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _markdown(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["(none)"]
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join(format_cell(v) for v in row.tolist()) + " |"
        for _, row in frame.astype(object).iterrows()
    ]
    return [head, rule, *body]
