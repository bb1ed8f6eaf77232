"""The paper's published tables (``results/published/*.csv``) as tidy data frames.

One row per model x registration x split x metric with the printed value and its unit; see
``results/published/README.md`` for the layout and the source.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path

import pandas as pd

# the shared names, re-exported for the analysis modules
from benchmark.vocabulary import AVERAGE as AVERAGE
from benchmark.vocabulary import PAPER_CELLS, VARIANTS
from benchmark.vocabulary import REGISTRATIONS as REGISTRATIONS
from benchmark.vocabulary import VARIANT_LABELS as VARIANT_LABELS

log = logging.getLogger(__name__)

#: the eight AP metrics averaged into one sensitivity in the paper's Fig. 5, as (split, metric)
METRICS = PAPER_CELLS
#: the protocol behind the published numbers: 280 real patients (216 train, 54 val, 10 test),
#: 300 px input, 60k iterations (paper sec. V-A and appendix B)
PAPER_PROTOCOL = {"patients": 280, "test_patients": 10, "input_size": 300, "iterations": 60000}
TABLE_FILES = {
    "I": "table1.csv",
    "II": "table2.csv",
    "III": "table3.csv",
    "S1": "tableS1.csv",
    "S2": "tableS2.csv",
}
COLUMNS = (
    "source",
    "section",
    "row_label",
    "model",
    "registration",
    "split",
    "metric",
    "value",
    "unit",
)


def published_dir() -> Path:
    """``$PHASEBENCH_PUBLISHED`` if set; else the tables installed with the package
    (``benchmark/published/``, found through ``importlib.resources``); else, in a source
    checkout, ``results/published/`` (where the installed copy comes from, see setup.py)."""
    env = os.environ.get("PHASEBENCH_PUBLISHED")
    if env:
        return Path(env)
    installed = importlib.resources.files("benchmark") / "published"
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "results" / "published"


def load_table(name: str, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Published table ``name`` ("I", "II", "III", "S1", "S2") in file order, values as floats."""
    if name not in TABLE_FILES:
        raise ValueError(f"unknown published table {name!r}; use one of {', '.join(TABLE_FILES)}")
    path = Path(root or published_dir()) / TABLE_FILES[name]
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: published table not found") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any():
        bad = frame.loc[values.isna(), "value"].iloc[0]
        raise ValueError(f"{path}: value {bad!r} is not a number")
    unknown = set(frame["registration"]) - set(VARIANTS)
    if unknown:
        raise ValueError(f"{path}: unknown registration {sorted(unknown)}; use {VARIANTS}")
    frame["value"] = values.astype(float)
    return frame


def published_liver_dice(root: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """The paper's Table II liver Dice per variant (``table2.csv``); empty, with a warning,
    when the table is not found."""
    try:
        table = load_table("II", root)
    except FileNotFoundError:
        log.warning("published Table II not found; liver_dice_published left empty")
        return {}
    rows = table[table["metric"] == "liver_dice"]
    return dict(zip(rows["registration"], rows["value"].astype(float), strict=True))


def load_ap(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Published AP (%) of Table I (unregistered) and Table S1 (registered), stacked."""
    return pd.concat([load_table("I", root), load_table("S1", root)], ignore_index=True)


def row_labels(frame: pd.DataFrame) -> dict[str, str]:
    """Model name -> printed row label, in order of first appearance."""
    first = frame.drop_duplicates("model")
    return dict(zip(first["model"], first["row_label"], strict=True))


def wide(frame: pd.DataFrame, keys: tuple[str, ...] = ("registration", "model")) -> pd.DataFrame:
    """One row per ``keys``, one column per (split, metric), in file order."""
    order = list(dict.fromkeys(zip(frame["split"], frame["metric"], strict=True)))
    table = frame.pivot_table(
        index=list(keys), columns=["split", "metric"], values="value", sort=False
    )
    return table.reindex(columns=pd.MultiIndex.from_tuples(order, names=["split", "metric"]))
