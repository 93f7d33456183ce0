"""The package's import layout: no import circle between vsstar modules, no private name imported across
modules.

Read statically with ``ast`` (no module is imported), so imports inside functions and under
``TYPE_CHECKING`` count too: a circle hidden in a function still ties two modules together. Run on
another checkout with ``python tests/test_layout.py PATH/vsstar`` (prints what it finds, exit 1 if any).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "vsstar"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``: dotted name -> file (a package is its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(root: Path) -> dict[str, list[tuple[str, str | None, int]]]:
    """Per module, what it imports from the package: (target module, imported name or None, line).

    ``from .pkg import name`` imports ``pkg`` (its ``__init__``) unless ``name`` is a submodule, which is
    then the target (name None). Relative imports are resolved against the importing module's package.
    A private attribute of an imported package module (``from . import cli`` then ``cli._encode``) is
    listed as an import of that name.
    """
    mods = modules(root)
    out: dict[str, list[tuple[str, str | None, int]]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: list[tuple[str, str | None, int]] = []
        bound: dict[str, str] = {}  # local name -> the package module it is bound to
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _nearest(alias.name, mods)
                    if target is not None:
                        found.append((target, None, node.lineno))
                        if alias.asname and target == alias.name:
                            bound[alias.asname] = target
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source not in mods:
                    continue  # outside the package (or a name that is not a module: not ours to judge)
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in mods:
                        found.append((sub, None, node.lineno))
                        bound[alias.asname or alias.name] = sub
                    else:
                        found.append((source, alias.name, node.lineno))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                found.append((bound[node.value.id], node.attr, node.lineno))
        out[name] = found
    return out


def _nearest(dotted: str, mods: dict[str, Path]) -> str | None:
    """The package module ``import dotted`` names (None outside the package)."""
    while dotted and dotted not in mods:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def cycles(root: Path) -> list[list[str]]:
    """The import circles between the package's modules: each strongly connected group of modules
    (Tarjan), as a closed path through it, e.g. ``[a, b, a]``."""
    graph = {m: sorted({t for t, _, _ in found if t != m}) for m, found in imports(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(g, graph) for g in groups]


def _closed_path(group: list[str], graph: dict[str, list[str]]) -> list[str]:
    """A shortest circle through the group's first module (breadth-first inside the group)."""
    start, members = group[0], set(group)
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in graph[v]:
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return group


def private_imports(root: Path) -> list[str]:
    """``from <another package module> import _name`` or ``module._name`` (one leading underscore; dunder
    names are fine), as "module:line imports source._name"."""
    out = []
    for name, found in imports(root).items():
        for target, imported, line in found:
            if (imported is not None and target != name and imported.startswith("_")
                    and not (imported.startswith("__") and imported.endswith("__"))):
                out.append(f"{name}:{line} imports {target}.{imported}")
    return out


def test_no_import_circle() -> None:
    found = cycles(PACKAGE)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_no_private_name_imported_across_modules() -> None:
    found = private_imports(PACKAGE)
    assert not found, "private names imported across modules: " + "; ".join(found)


def test_the_checker_sees_circles_and_private_imports(tmp_path: Path) -> None:
    """On a small made-up package: a relative circle through a function-level import, a package's
    ``__init__`` in a circle, and a private import; a submodule imported by name is not its package."""
    pkg = tmp_path / "vsstar"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def f():\n    from . import a\nthing = 1\n",
        "c.py": "from .sub import helper\n",  # sub/__init__, which imports c back
        "sub/__init__.py": "from ..c import _hidden\nhelper = 1\n",
        "sub/leaf.py": "from vsstar.sub import helper\n",
        "d.py": "from .sub import leaf\nfrom .a import __all__\n",  # a submodule: no edge to sub/__init__
        "e.py": "from . import b\nimport vsstar.a as mod\nb.thing\nmod._x\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    found = {tuple(c) for c in cycles(pkg)}
    assert found == {("vsstar.a", "vsstar.b", "vsstar.a"), ("vsstar.c", "vsstar.sub", "vsstar.c")}
    assert sorted(private_imports(pkg)) == ["vsstar.e:4 imports vsstar.a._x", "vsstar.sub:1 imports vsstar.c._hidden"]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    problems = [" -> ".join(c) for c in cycles(root)] + private_imports(root)
    print("\n".join(problems) or "no circle, no private import")
    sys.exit(1 if problems else 0)
