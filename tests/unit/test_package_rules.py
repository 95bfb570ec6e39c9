"""The layout rules a newcomer relies on, checked on the source: stages import only
earlier stages, nothing imports in a cycle, and flows hold no SQL or bucket keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ["core", "ingest", "tables", "export", "train", "evaluate"]


def _imports(path: Path) -> set[str]:
    """Every ``tasks...`` module a file imports (absolute imports only, as the code uses)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tasks"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tasks"))
    return found


def _from_modules(path: Path) -> set[str]:
    """The modules named after ``from`` (not the names imported from them)."""
    return {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tasks")
    }


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, set[str]]:
    files = sorted((REPO / "tasks").rglob("*.py"))
    modules = {_module(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def test_a_stage_imports_only_itself_and_earlier_stages() -> None:
    late: list[str] = []
    for module, imported in _modules().items():
        if module.count(".") < 1 or module.split(".")[1] not in STAGES:
            continue
        rank = STAGES.index(module.split(".")[1])
        for other in imported:
            stage = other.split(".")[1] if other.count(".") >= 1 else ""
            if stage in STAGES and STAGES.index(stage) > rank:
                late.append(f"{module} imports {other}")
    assert late == []


def test_no_import_cycles_between_modules() -> None:
    graph = _modules()
    # A package's __init__ imports its modules to name its entry points; a module that
    # imports names from its own package's __init__ is left out, as Python resolves it.
    edges = {m: {o for o in deps if o != m.rsplit(".", 1)[0]} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_tasks_has_only_stage_packages_at_the_top() -> None:
    top = sorted(p.name for p in (REPO / "tasks").iterdir() if not p.name.startswith("__"))
    assert top == sorted(STAGES)


def test_flows_hold_no_sql_and_no_bucket_keys() -> None:
    sql = re.compile(r"\b(SELECT|COPY|INSERT|CREATE|DELETE FROM)\b")
    # A key is a quoted top-level folder, alone or with a path; a dict key ("tables":) is not.
    folders = "blobs|manifests|tables|exports|masks|models|embeddings|reports"
    keys = re.compile(rf"[\"']({folders})(/[^\"']*)?[\"'](?!\s*:)")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted((REPO / "flows").glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line) or keys.search(line)
    ]
    assert found == []


def test_flows_import_stages_only_through_their_front_doors() -> None:
    deep = [
        f"{path.name}: {module}"
        for path in sorted((REPO / "flows").glob("*.py"))
        for module in _from_modules(path)
        if module.count(".") >= 2 and module.split(".")[1] in STAGES[1:]
    ]
    assert deep == []
