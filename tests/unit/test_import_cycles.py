"""No import cycles between the project's modules, and dependencies that point one way.

The graph is read from the source (the AST), not by importing: every ``import`` and ``from ...
import`` of cache_runtime, cache_operator, devcluster and cachewarden, at module level, under
``if TYPE_CHECKING:`` and inside functions alike. A cycle that only the type checker sees, or that a
late import inside a function hides, is still two modules that cannot be read or changed apart.

Run it alone with ``make check-imports``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cache_runtime", "cache_operator", "devcluster", "cachewarden")
# Which package may import which: engine <- service <- operator <- command; devcluster (the local
# cluster the tests and the demo use) may use the engine's and the operator's helpers, never the
# command. Within cache_runtime, the engine never imports the service (cache_runtime.service).
ALLOWED: dict[str, set[str]] = {
    "cache_runtime": {"cache_runtime"},
    "cache_operator": {"cache_operator", "cache_runtime"},
    "devcluster": {"devcluster", "cache_runtime", "cache_operator"},
    "cachewarden": set(PACKAGES),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` stands for (its longest prefix that is a module), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the module)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [_resolve(alias.name, modules) for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import mod` imports the module pkg.mod when there is one, else names of pkg
                found = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _resolve(base, modules)
                    for alias in node.names
                ]
            targets.update(target for target in found if target is not None and target != name)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(_cycle_path(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_path(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through the component's first module: a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    paths = [[start]]
    seen = {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & members):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                paths.append([*path, target])
    return component


def test_the_graph_sees_the_project_modules() -> None:
    graph = import_graph()
    assert "cache_runtime.cache" in graph
    assert "cache_runtime.config" in graph["cache_runtime.cache"]


def test_a_cycle_is_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_the_projects_modules() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package]
    )
    assert not wrong, "\n".join(wrong)


def test_the_engine_does_not_import_the_service() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("cache_runtime.") and not module.startswith("cache_runtime.service")
        for target in targets
        if target.startswith("cache_runtime.service")
    )
    assert not wrong, "\n".join(wrong)
