"""The package's shape: import-linter's contracts hold, no module imports itself back through others
(checked again here, independently of import-linter), modules stay small, and each says what it is for.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vaelab"
MAX_LINES = 420  # a module over this is doing two jobs: split it


def module_name(path: Path) -> str:
    """``src/vaelab/data/__init__.py`` -> ``vaelab.data``; ``src/vaelab/io.py`` -> ``vaelab.io``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a ``from X import ...`` in ``module`` reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def top_level(tree: ast.Module):
    """The statements a module runs on import (into ``if``/``try`` blocks, not into functions)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If):
            stack += [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            stack += [*node.body, *node.orelse, *node.finalbody, *(s for h in node.handlers for s in h.body)]


def bound_by_import(package: str, name: str) -> tuple[str, str] | None:
    """Where a package's ``__init__`` takes ``name`` from with ``from M import x as name``: (M, x)."""
    for node in top_level(TREES[package]):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return absolute(package, node), alias.name
    return None


def binds(package: str, name: str) -> bool:
    """Whether a package's ``__init__`` defines ``name`` itself (def, class, assignment, import)."""
    for node in top_level(TREES[package]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name.split(".")[0]) == name for a in node.names
        ):
            return True
    return False


def defining_module(module: str, name: str, seen: frozenset = frozenset()) -> str:
    """The module that ``from module import name`` really depends on: a submodule of that name, or
    where a package's ``__init__`` re-exports it from, or ``module`` itself."""
    if module not in MODULES or not is_package(module) or (module, name) in seen:
        return module
    source = bound_by_import(module, name)
    if source is not None and source[0] == module:  # ``from . import name`` in the package itself
        return f"{module}.{name}" if f"{module}.{name}" in MODULES else module
    if source is not None and source[0] in MODULES:
        return defining_module(source[0], source[1], seen | {(module, name)})
    if not binds(module, name) and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def imports(module: str) -> set[str]:
    """Every vaelab module ``module`` imports, anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = absolute(module, node)
            found |= {defining_module(source, alias.name) for alias in node.names if alias.name != "*"}
            if any(alias.name == "*" for alias in node.names):
                found.add(source)
    return {m for m in found if m in MODULES and m != module}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the graph's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through a strongly connected component, for the failure message: a -> b -> a."""
    members = set(component)
    path = [component[0]]
    while True:
        step = min(graph[path[-1]] & members)
        if step in path:
            return [*path[path.index(step) :], step]
        path.append(step)


def test_import_linter_contracts_are_kept():
    """The layers, the one-way data path, the independent readers and no sibling cycles, as
    pyproject.toml states them."""
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run(
        [sys.executable, "-c", lint, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_cycle_check_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    components = [c for c in strongly_connected(graph) if len(c) > 1]
    assert components == [["a", "b", "c"]]
    assert a_cycle(graph, components[0]) == ["a", "b", "c", "a"]
    assert all(len(c) == 1 for c in strongly_connected({"a": {"b"}, "b": set(), "c": {"a", "b"}}))


def test_the_import_graph_resolves_names_to_their_modules():
    assert "vaelab.errors" in imports("vaelab.config")
    cli = imports("vaelab.cli")
    assert {"vaelab.cli.train", "vaelab.cli.sample", "vaelab.cli._common"} <= cli  # from . import train
    assert "vaelab" not in cli  # a submodule's import never counts as one of its package
    assert "vaelab.cli" in imports("vaelab.__main__")  # ``run`` is defined in cli/__init__.py itself


def test_no_module_imports_itself_back():
    """Every import counts (functions included), resolved to the module that defines the name:
    a cycle here is a cycle at run time, whatever import-linter's contracts allow."""
    graph = {name: imports(name) for name in MODULES}
    cycles = [a_cycle(graph, c) for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_stay_small():
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in MODULES.values()}
    big = [f"{path.relative_to(ROOT)}: {n} lines" for path, n in sizes.items() if n > MAX_LINES]
    assert not big, f"over {MAX_LINES} lines, split them:\n" + "\n".join(big)


def test_every_module_says_what_it_is_for():
    bare = [str(MODULES[n].relative_to(ROOT)) for n, tree in TREES.items() if not ast.get_docstring(tree)]
    assert not bare, "no module docstring:\n" + "\n".join(bare)
