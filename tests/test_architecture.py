"""The import graph of our packages points one way (``docs/architecture.md``).

* ``models`` imports nothing of ``benchmark`` or ``registration``;
* ``registration`` imports of ``benchmark`` only its small core (:data:`CORE`), and the core
  imports nothing outside itself;
* no two modules import each other, directly or around a loop, at module level. Imports inside
  functions (and under ``if TYPE_CHECKING:``) are deliberate lazy imports: they count for the
  direction rules but not for cycles.

Every module of the three packages is parsed with :mod:`ast`, so the test needs no import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "registration", "benchmark")
CORE = frozenset(
    {"benchmark", "benchmark.vocabulary", "benchmark.cohort", "benchmark.atomic", "benchmark.names"}
)


@dataclass
class Graph:
    """Edges between our modules: ``top`` (run at import time) and ``all`` (any import)."""

    modules: dict[str, Path]
    top: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    all: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Parse every module of ``packages`` under ``root`` and collect its imports of them."""
    graph = Graph({module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")})
    for name, path in graph.modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, at_top in _imports(tree, True):
            for target in _targets(node, name, path, graph.modules):
                found = _resolve(target, graph.modules) if target.split(".")[0] in packages else None
                if found and found != name:
                    graph.all[name].add(found)
                    if at_top:
                        graph.top[name].add(found)
    return graph


def _imports(node: ast.AST, top: bool) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node`` and whether it runs when the module is imported."""
    out = []
    for child in ast.iter_child_nodes(node):
        at_top = top and not isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ) and not _is_type_checking(child)
        if isinstance(child, ast.Import | ast.ImportFrom):
            out.append((child, at_top))
        out.extend(_imports(child, at_top))
    return out


def _targets(
    node: ast.Import | ast.ImportFrom, name: str, path: Path, modules: dict[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative import
        package = (name if path.name == "__init__.py" else name.rpartition(".")[0]).split(".")
        base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
    # ``from pkg import submodule`` needs the submodule, ``from pkg import name`` the package
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` is, or the innermost of ours that holds it."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def forbidden_imports(graph: Graph) -> list[str]:
    """``importer -> imported`` for every import that goes against the layers."""
    bad = []
    for name, imported in sorted(graph.all.items()):
        top = name.split(".")[0]
        for target in sorted(imported):
            other = target.split(".")[0]
            if top == "models" and other != "models":
                bad.append(f"{name} -> {target} (models imports nothing of ours)")
            elif top == "registration" and other == "benchmark" and target not in CORE:
                bad.append(f"{name} -> {target} (registration may use only benchmark's core)")
            elif name in CORE and target not in CORE:
                bad.append(f"{name} -> {target} (the core imports only the core)")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


# ----------------------------------------------------------------------------- our code


def test_layers_point_one_way():
    graph = import_graph(REPO)
    assert {"models", "registration", "benchmark", *CORE} <= set(graph.modules)
    bad = forbidden_imports(graph)
    assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph(REPO).top)
    assert not found, "import cycles (module-level imports):\n  " + "\n  ".join(
        " <-> ".join(c) for c in found
    )


# ----------------------------------------------------------------------------- the checker


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_forbidden_directions_also_inside_functions(tmp_path):
    root = _tree(tmp_path, {
        "models/__init__.py": "",
        "models/ssd.py": "def f():\n    from benchmark.cohort import Cohort\n",
        "registration/__init__.py": "from benchmark.cohort import Cohort\n",
        "registration/stage.py": "from benchmark.analysis import published\n",
        "benchmark/__init__.py": "",
        "benchmark/cohort.py": "from benchmark import runner\n",
        "benchmark/runner.py": "import registration\nimport models.ssd\n",
        "benchmark/analysis/__init__.py": "",
        "benchmark/analysis/published.py": "",
    })
    bad = forbidden_imports(import_graph(root))
    assert bad == [
        "benchmark.cohort -> benchmark.runner (the core imports only the core)",
        "models.ssd -> benchmark.cohort (models imports nothing of ours)",
        "registration.stage -> benchmark.analysis.published "
        "(registration may use only benchmark's core)",
    ]


def test_checker_finds_cycles_but_allows_lazy_imports(tmp_path):
    root = _tree(tmp_path, {
        "benchmark/__init__.py": "",
        "benchmark/a.py": "from benchmark.b import x\n",
        "benchmark/b.py": "from . import c\n",
        "benchmark/c.py": "import benchmark.a\n",
        "benchmark/d.py": "from benchmark import e\n",
        "benchmark/e.py": "def f():\n    from benchmark import d\n",
        "benchmark/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from benchmark import g\n",
        "benchmark/g.py": "import benchmark.f\n",
        "benchmark/pkg/__init__.py": "from benchmark.pkg.h import y\n",
        "benchmark/pkg/h.py": "from benchmark.pkg import i\n",  # a sibling submodule: fine
        "benchmark/pkg/i.py": "",
    })
    graph = import_graph(root, ("benchmark",))
    assert cycles(graph.top) == [["benchmark.a", "benchmark.b", "benchmark.c"]]
    assert "benchmark.d" in graph.all["benchmark.e"]
