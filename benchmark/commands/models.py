"""``models list``: every registered detector (built-in, entry-point plugins, --model-module)."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

ORDER = 60
WIDTH = 100
COUNTED_AT = (
    "params: counted at each builder's defaults (width 1.0, the input size in column 'input', "
    "px)\nbuilt on PyTorch's 'meta' device; --json gives every field in full"
)

LIST_EPILOG = """\
Parameter counts are for the builder's defaults (the paper's configuration, e.g. 300 px and
width 1.0); the model is instantiated on PyTorch's 'meta' device, so nothing is allocated.
Your own detectors join with --model-module MOD or an entry point in the group
'phasebench.models' (see docs/adding-a-detector.md).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from benchmark.commands import add_model_module_arg

    models = subparsers.add_parser(
        "models",
        help="list the available detectors",
        description="Inspect the detector registry.",
    )
    sub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    lst = sub.add_parser(
        "list",
        help="table of every detector: parameters, input size, supervision, paper row",
        description="Print every registered detector with parameter count, input size, "
        "supervision, paper table/row and description.",
        epilog=LIST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_module_arg(lst)
    lst.add_argument("--table", choices=("I", "III", "none"),
                     help="only the models of this paper table (none: not in the paper)")
    lst.add_argument("--pattern", metavar="GLOB", help="only names matching GLOB, e.g. 'gssd*'")
    lst.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    lst.set_defaults(func=run_list)


def describe(name: str) -> dict[str, Any]:
    """One row of the table: build ``name`` with its defaults on the meta device."""
    import torch

    import models

    meta = models.info(name)
    try:
        with torch.device("meta"):
            net = models.build(name)
    except Exception:  # a builder that needs real tensors (e.g. calls .item()) is built on CPU
        net = models.build(name)
    supervision = sorted(s.value for s in getattr(net, "supervision", ()))
    return {
        "name": name,
        "params": sum(p.numel() for p in net.parameters()),
        "input_size": getattr(net, "input_size", None),
        "supervision": "+".join(supervision),
        "table": meta.table,
        "paper_row": meta.paper_row,
        "description": meta.description,
        "module": meta.module,
    }


def format_table(rows: list[dict[str, Any]], width: int = WIDTH) -> str:
    """Fixed-width text table of :func:`describe` rows, at most ``width`` columns: one line per
    model (the paper row shortened with "..." when needed), its description wrapped below."""
    header = ["name", "params", "input", "supervision", "table", "paper row"]
    body = [
        [
            r["name"],
            f"{r['params'] / 1e6:.2f}M",
            str(r["input_size"]),
            r["supervision"],
            r["table"] or "-",
            r["paper_row"] or "-",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
    widths[-1] = max(len(header[-1]), min(widths[-1], room))
    lines = []
    for k, line in enumerate([header, ["-" * w for w in widths], *body]):
        cells = [_fit(c, w).ljust(w) for c, w in zip(line, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if k >= 2 and rows[k - 2]["description"]:
            lines += textwrap.wrap(rows[k - 2]["description"], width, initial_indent="    ",
                                   subsequent_indent="    ")
    return "\n".join([*lines, "", COUNTED_AT])


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_list(args: argparse.Namespace) -> int:
    from benchmark.commands import load_model_modules
    from models import list_models

    load_model_modules(args)
    table = "" if args.table == "none" else args.table
    rows = [describe(name) for name in list_models(table=table, pattern=args.pattern)]
    print(json.dumps(rows, indent=1) if args.json else format_table(rows))
    return 0
