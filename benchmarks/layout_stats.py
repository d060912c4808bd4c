"""The package's shape in numbers: modules per folder, import edges, circles, the largest functions.

    python benchmarks/layout_stats.py [PATH_TO_ICLEBM_PACKAGE]

Edges are distinct module -> module imports found by `ast` (function-local imports included, the
same graph that tests/test_architecture.py checks); circles are strongly connected components.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import test_architecture as contract  # noqa: E402


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            out.append([v, *comp])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main() -> None:
    if len(sys.argv) > 1:
        contract.PACKAGE = Path(sys.argv[1]).resolve()
    files = sorted(contract.PACKAGE.rglob("*.py"))
    graph = {m: {t for t, _ in targets if t} for m, targets in contract.import_graph().items()}
    folders = Counter(str(p.parent.relative_to(contract.PACKAGE.parent)) for p in files)
    longest = sorted(
        ((n.end_lineno - n.lineno + 1, f"{contract.module_name(p)}.{n.name}")
         for p in files for n in ast.walk(ast.parse(p.read_text()))
         if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)), reverse=True)[:5]
    print(f"files per folder: {dict(sorted(folders.items()))} ({len(files)} in all)")
    print(f"import edges (module -> module): {sum(len(v) for v in graph.values())}")
    print(f"circles: {strongly_connected(graph)}")
    print("largest functions: " + ", ".join(f"{name} ({n} lines)" for n, name in longest))


if __name__ == "__main__":
    main()
