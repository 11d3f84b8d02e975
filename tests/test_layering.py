"""The package's structure follows the pipeline: no import cycle of any size, among ecomrec's
parts or among its modules (the package root and modules inside one subpackage included), and
no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ecomrec"


def imports() -> list[tuple[str, str, list[str]]]:
    """(importing module, imported module, names) for every ``ecomrec`` import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ecomrec":
                found.append((module, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(module, a.name, []) for a in node.names if a.name.split(".")[0] == "ecomrec"]
    return found


def target_module(target: str, name: str) -> str:
    """The module an ``from target import name`` reads: ``target.name`` when that is a module of
    the package, else ``target`` itself."""
    path = PACKAGE.parent / Path(*f"{target}.{name}".split("."))
    return f"{target}.{name}" if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else target


def part(module: str) -> str:
    """``ecomrec.retrieval.als`` → ``retrieval``; ``ecomrec.engine`` → ``engine``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` if there is any (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_the_parts_of_ecomrec() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _ in imports():
        a, b = part(source), part(target)
        if a and b and a != b:
            graph.setdefault(a, set()).add(b)
    assert "retrieval" in graph and "index" in graph["retrieval"]  # the check sees the real graph
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph) or [])}"


def test_no_import_cycle_among_the_modules_of_ecomrec() -> None:
    """Module by module, every import counted (lazy ones inside functions too): a cycle through
    the package root (``__init__`` → engine → … → ``from ecomrec import``) or between two modules
    of one subpackage is a cycle."""
    graph: dict[str, set[str]] = {}
    for source, target, names in imports():
        for module in {target_module(target, name) for name in names} or {target}:
            if module != source:
                graph.setdefault(source, set()).add(module)
    assert "ecomrec.engine" in graph["ecomrec"]  # the root is seen
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph) or [])}"


def test_cycle_detection_finds_a_planted_cycle() -> None:
    assert cycle({"data": {"retrieval"}, "retrieval": {"evaluation"}, "evaluation": {"data"}}) == [
        "data", "retrieval", "evaluation", "data"
    ]


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        f"{source} imports {name} from {target}"
        for source, target, names in imports()
        for name in names
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and source != target
    ]
    assert not private, private
