"""The layout contract: every module sits in a layer, and imports only go down (or sideways within
a layer), with no circle anywhere. Function-local imports count; imports under `if TYPE_CHECKING:`
do not (they never run). See the README, "Architecture"."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "iclebm"

# Bottom to top. A module's layer is the first entry that its dotted name (below iclebm.) starts with.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("devices", "grid", "tasks"),
    ("data",),
    ("card",),
    ("models",),
    ("checkpoints",),
    ("dynamics",),
    ("objectives",),
    ("training",),
    ("evaluation",),
    ("probes",),
    ("cli", "bench", "diagnostics", "render"),
    ("ui",),
]
FACADES = ("", "__main__")  # iclebm/__init__.py re-exports everything; __main__ runs the CLI
MAX_TOP_MODULES = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int:
    head = name.split(".")[0]
    for i, members in enumerate(LAYERS):
        if head in members:
            return i
    raise AssertionError(f"iclebm.{name} is in no layer: add it to LAYERS in tests/test_architecture.py")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)  # or typing.TYPE_CHECKING
            if name == "TYPE_CHECKING":
                skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(path: Path, modules: set[str], source: str | None = None) -> list[tuple[str, int]]:
    """(imported iclebm module, line) for every import in the file, function-local ones included."""
    tree = ast.parse(path.read_text() if source is None else source)
    skip = _type_checking_nodes(tree)
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                mod = "iclebm" + ("." + mod if mod else "")
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod.
            # (A parent package's __init__ runs for any submodule import, so it is no edge of its own.)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}"[len("iclebm."):] in modules else mod
                       for a in node.names]
        for t in targets:
            if t != "iclebm" and not t.startswith("iclebm."):
                continue
            t = t[len("iclebm."):] if t != "iclebm" else ""
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t != me:  # "" is the iclebm facade itself
                out.append((t, node.lineno))
    return sorted(set(out))


def import_graph() -> dict[str, list[tuple[str, int]]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: imports_of(p, modules) for m, p in files.items()}


def find_cycle(graph: dict[str, list[tuple[str, int]]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        colour[m] = 1
        stack.append(m)
        for t, _ in graph.get(m, []):
            if colour.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if colour.get(t) is None and (found := visit(t)):
                return found
        stack.pop()
        colour[m] = 2
        return None

    graph = {m: [(t, line) for t, line in targets if t not in FACADES] for m, targets in graph.items()}
    for m in sorted(graph):
        if colour.get(m) is None and (found := visit(m)):
            return found
    return None


def test_every_module_is_in_a_layer() -> None:
    for m in import_graph():
        if m not in FACADES:
            layer_of(m)


def test_imports_only_go_down() -> None:
    upward = []
    for m, targets in import_graph().items():
        if m in FACADES:
            continue
        for t, line in targets:
            if t not in FACADES and layer_of(t) > layer_of(m):
                upward.append(f"iclebm/{m.replace('.', '/')}.py:{line} imports iclebm.{t} (a higher layer)")
            if t in FACADES:
                upward.append(f"iclebm/{m.replace('.', '/')}.py:{line} imports the facade, not a module")
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(f"iclebm.{m}" for m in cycle)


def test_few_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_contract_catches_what_it_should() -> None:
    """A function-local upward import and a circle are both found; TYPE_CHECKING imports are not."""
    graph = {"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)]}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from iclebm.ui import state\n"
        "def f():\n    from iclebm.evaluation import bayes\n"
        "from . import errors\n"
        "from iclebm import load_checkpoint\n"
    )
    modules = {"grid", "ui", "ui.state", "evaluation", "evaluation.bayes", "errors"}
    found = [t for t, _ in imports_of(PACKAGE / "grid.py", modules, source=src)]
    assert found == ["", "errors", "evaluation.bayes"]  # "": the facade, refused below the top
    assert layer_of("evaluation.bayes") > layer_of("grid")  # so test_imports_only_go_down would fail


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_layers_exist(layer: int) -> None:
    for member in LAYERS[layer]:
        assert (PACKAGE / member).is_dir() or (PACKAGE / f"{member}.py").is_file(), member


def test_the_facade_re_exports_every_public_function_and_class() -> None:
    """`iclebm.<name>` is the stable import path: every public def/class of the library (not the app,
    not the command line) must be re-exported by iclebm/__init__.py."""
    import iclebm

    missing = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name in FACADES or name.split(".")[0] in ("ui", "cli", "bench"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                if getattr(iclebm, node.name, None) is None or node.name not in iclebm.__all__:
                    missing.append(f"iclebm.{name}.{node.name}")
    assert not missing, "add to iclebm/__init__.py: " + ", ".join(missing)
    assert all(hasattr(iclebm, n) for n in iclebm.__all__)
