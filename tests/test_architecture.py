"""The package structure's rules (issue 19), checked so that they do not drift back: no import
circle among the project's modules, whether the import is at module level or inside a function
(an import inside a function that dodges a circle is still a circle), and no source file over
700 lines. Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_l2l", "training", "evaluation", "analysis", "l2l")
MAX_LINES = 700


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


class _Imports(ast.NodeVisitor):
    """The project modules one module imports, anywhere in it."""

    def __init__(self, name: str, path: Path, modules: dict[str, Path]):
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.modules, self.found = modules, set()

    def _add(self, dotted: str) -> None:
        while dotted and dotted not in self.modules:  # a name inside a module: the module
            dotted = dotted.rpartition(".")[0]
        if dotted:
            self.found.add(dotted)

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            self._add(f"{base}.{alias.name}")


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        visitor = _Imports(name, path, modules)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        graph[name] = visitor.found - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_circle_among_the_projects_modules():
    graph = import_graph()
    assert len(graph) > 100  # the walk found the packages
    assert circles(graph) == []


def test_the_circle_check_finds_a_circle_made_inside_functions():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "def f():\n    from training.trainer import train\n"
    visitor = _Imports("training.study", REPO / "training" / "study.py", project_modules())
    visitor.visit(ast.parse(source))
    assert visitor.found == {"training.trainer"}
    visitor = _Imports("training.study", REPO / "training" / "study.py", project_modules())
    visitor.visit(ast.parse("if TYPE_CHECKING:\n    from training.trainer import train\n"))
    assert visitor.found == set()


def test_no_source_file_over_700_lines():
    long = {str(path.relative_to(REPO)): n for path in project_modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
