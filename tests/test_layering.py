"""The package's import graph: acyclic, no private names across modules, pure layers stay pure.

These read every module's ``import`` statements (function-level ones included) with ``ast``,
so a cycle cannot hide behind an import placed inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import ROOT

PACKAGE = ROOT / "socketeer"

#: Modules that must import no Twisted, directly or through other Socketeer modules.
PURE = ("socketeer.wire", "socketeer.config", "socketeer.policy")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            # ``from socketeer.x import y`` where y is a module: the edge goes to the module.
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if submodules:
                for sub in submodules:
                    yield sub, [], node.lineno
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                if rest:
                    yield target, rest, node.lineno
            else:
                yield target, names, node.lineno


def ancestors(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name`` can be imported."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def graph() -> dict[str, set[str]]:
    """Module -> the Socketeer modules importing it runs: what it imports, and the parent
    packages of each (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first)."""
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        edges[name] = {p for p in ancestors(name) if p in MODULES}
        for target, _, _ in imports(name):
            for module in [*ancestors(target), target]:
                if module in MODULES and module != name:
                    edges[name].add(module)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(edges, WHITE)
    for start in sorted(edges):
        if colour[start] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        colour[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if colour[child] == GREY:
                    path = [n for n, _ in stack]
                    return path[path.index(child) :] + [child]
                if colour[child] == WHITE:
                    colour[child] = GREY
                    stack.append((child, iter(sorted(edges[child]))))
                    break
            else:
                colour[node] = BLACK
                stack.pop()
    return None


def test_the_graph_sees_every_module_and_its_function_level_imports() -> None:
    # The walk must reach imports inside functions, or a cycle could hide there.
    assert "socketeer.tap" in MODULES and "socketeer.wire.envelope" in MODULES
    assert len(MODULES) > 40
    nested = {
        name
        for name, path in MODULES.items()
        for fn in ast.walk(ast.parse(path.read_text()))
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("socketeer")
    }
    for name in nested:
        assert graph()[name], f"{name} has function-level imports that the graph missed"


def test_a_package_init_counts_as_imported_by_its_modules() -> None:
    # ``tunnel/__init__`` importing ``tunnel.node`` would run before every tunnel module.
    edges = graph()
    assert "socketeer.tunnel" in edges["socketeer.tunnel.stream"]
    assert "socketeer" in edges["socketeer.wire.envelope"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_import_graph_is_acyclic() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def module_aliases(name: str) -> dict[str, str]:
    """Local names bound to Socketeer modules in module ``name`` -> the module's full name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    aliases: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("socketeer"):
                    # ``import a.b.c`` binds ``a``; ``import a.b.c as x`` binds x to a.b.c
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "socketeer"
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    return aliases


def dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"], or None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def test_no_module_imports_another_modules_private_name() -> None:
    offences = []
    for name in MODULES:
        for target, names, line in imports(name):
            if not target.startswith("socketeer") or target == name:
                continue
            leaf = target.rpartition(".")[2]
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if leaf.startswith("_") and leaf != "__init__":
                private.append(target)
            offences += [f"{name}:{line} takes {target}.{n}" for n in private]
        # ``module._private`` (also ``pkg.module._private``) on an imported Socketeer module
        aliases = module_aliases(name)
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            chain = dotted(node) if isinstance(node, ast.Attribute) else None
            if not chain or chain[0] not in aliases:
                continue
            module = aliases[chain[0]]
            for attr in chain[1:]:
                if f"{module}.{attr}" in MODULES:
                    module = f"{module}.{attr}"
                    continue
                if attr.startswith("_") and not attr.startswith("__") and module != name:
                    offences.append(f"{name}:{node.lineno} reads {module}.{attr}")
                break
    assert not offences, "\n".join(sorted(set(offences)))


def test_the_private_name_check_sees_every_spelling(tmp_path) -> None:
    """The check above must not be fooled by ``import ... as``, relative imports or chains."""
    samples = [
        "import socketeer.tunnel.stream as st\nst._x\n",
        "import socketeer.tunnel.stream\nsocketeer.tunnel.stream._x\n",
        "from socketeer.tunnel import stream\nstream._x\n",
        "from . import stream\nstream._x\n",
    ]
    expected = "socketeer.tunnel.stream._x"
    for source in samples:
        path = PACKAGE / "tunnel" / "_layering_probe.py"
        MODULES["socketeer.tunnel._layering_probe"] = path
        try:
            path.write_text(source)
            with pytest.raises(AssertionError, match=expected.replace(".", r"\.")):
                test_no_module_imports_another_modules_private_name()
        finally:
            path.unlink()
            del MODULES["socketeer.tunnel._layering_probe"]


def closure(name: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = {name}, [name]
    while todo:
        for child in edges[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


@pytest.mark.parametrize(
    "name", [m for m in MODULES if any(m == p or m.startswith(p + ".") for p in PURE)]
)
def test_pure_layers_import_no_twisted(name: str) -> None:
    """wire/, config/ and policy.py: parsers and rules that run (and fuzz) without a reactor."""
    edges = graph()
    for module in sorted(closure(name, edges)):
        for target, _, line in imports(module):
            assert not target.startswith(("twisted", "zope")), (
                f"{name} reaches Twisted: {module}:{line} imports {target}"
            )


def test_pure_layers_load_no_twisted_at_run_time() -> None:
    """The same promise, checked by importing them in a fresh interpreter."""
    pure = sorted(m for m in MODULES if any(m == p or m.startswith(p + ".") for p in PURE))
    code = (
        "import importlib, sys\n"
        f"for m in {pure!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'zope'))\n"
        "print(bad[:5])\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
