"""No import circle in studio/: neither between two files nor between two top-level packages.

Read from the source with `ast` (nothing is imported), counting imports inside functions too: a lazy
import is still a dependency, it only moves the failure to run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDIO = ROOT / "studio"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> studio modules it imports (`root` holds the `studio` folder). `from pkg import sub`
    counts as importing `pkg.sub` only when `sub` is a module (the package's __init__ is then just the
    way there)."""
    files = {module_name(p, root): p for p in (root / "studio").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(package + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                found.update(subs)
                if len(subs) < len(node.names):
                    found.add(base)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Top-level package (or module) of studio/ -> the ones it imports."""
    def top(m: str) -> str:
        return m.split(".")[1] if m.count(".") else m

    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        out.setdefault(top(src), set()).update(top(t) for t in targets if top(t) != top(src))
    return out


def test_no_import_circle_between_files():
    assert cycles(import_graph()) == []


def test_no_import_circle_between_packages():
    assert cycles(package_graph(import_graph())) == []


def test_the_check_finds_a_circle(tmp_path):
    """The checker itself: two files importing each other, and two packages doing so, are both found."""
    pkg = tmp_path / "studio"
    for folder in ("a", "b"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text("from studio.b import two\n")
    (pkg / "b" / "two.py").write_text("def f():\n    from studio.a.one import g\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["studio.a.one", "studio.b.two"]]
    assert cycles(package_graph(graph)) == [["a", "b"]]


@pytest.mark.parametrize("package", ["registry"])
def test_registries_import_nothing_heavy(package):
    """The registries are read by the config, the CLI and the UI: no torch, no other part of studio."""
    for path in (STUDIO / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in names if m.split(".")[0] in ("torch", "diffusers", "transformers", "peft")}, path
        assert not {m for m in names if m.startswith("studio") and not m.startswith(f"studio.{package}")}, path
