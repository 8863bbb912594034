"""The package's import graph: no import circles between modules, and nothing imports the CLI.

Every ``import``/``from ... import`` statement of every module counts, at any depth (also the
ones inside functions, which run later but still tie the modules together), resolved to the
module it names (``from pkg import name`` is ``pkg.name`` when that is a module, else ``pkg``).
Circles are the strongly connected components of that graph with more than one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "airflow_provider_stepcab"
ROOT = Path(__file__).resolve().parent.parent / PKG
#: the command-line modules: only each other (and ``python -m``) may import them
CLI = {f"{PKG}.cli", f"{PKG}.build_cli", f"{PKG}.run_cli", f"{PKG}.run_args", f"{PKG}.__main__"}
#: import circles still to be broken (listed for the lead; each entry must still exist, so that
#: the list shrinks as they are fixed)
KNOWN_CYCLES = {
    # get_provider_info() imports provider_info, which imports __version__ from the package
    frozenset({PKG, f"{PKG}.provider_info"}),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    """The package modules ``name`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> set[frozenset]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    out: set = set()
    counter = 0
    for start, first in edges.items():
        if start in index:
            continue
        work = [(start, iter(sorted(first)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.add(frozenset(component))
    return out


def test_the_graph_is_read():
    edges = graph()
    assert f"{PKG}.dag_factory.spec" in edges[f"{PKG}.dag_factory"]          # a function-level import
    assert f"{PKG}.recipe.errors" in edges[f"{PKG}.recipe.api"]               # a relative import
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}


def test_no_import_circles_but_the_known_ones():
    found = circles(graph())
    new = found - KNOWN_CYCLES
    assert not new, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)
    gone = KNOWN_CYCLES - found
    assert not gone, "fixed, remove from KNOWN_CYCLES: " + "; ".join(" <-> ".join(sorted(c)) for c in gone)


def test_nothing_imports_the_cli():
    offenders = {name: sorted(deps & CLI) for name, deps in graph().items() if name not in CLI and deps & CLI}
    assert not offenders, offenders
