"""The layering: ``worldnet/`` (library) ← ``tasks/`` (Prefect + MLflow) ← ``flows/`` (flows, CLI, server); never upwards.

Each layer may import the ones to its left and nothing to its right:

* ``worldnet/`` never imports ``tasks``, ``flows``, Prefect, MLflow or a web framework;
* ``tasks/`` never imports ``flows`` or a web framework;
* ``flows/`` may import anything.

Imports inside functions count too (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = {"fastapi", "starlette", "uvicorn", "flask", "django", "aiohttp"}
FORBIDDEN = {
    "worldnet": {"prefect", "prefect_dask", "mlflow", "tasks", "flows"} | WEB,
    "tasks": {"flows"} | WEB,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _offenders(layer: str) -> dict[str, list[str]]:
    found = {}
    for p in (ROOT / layer).rglob("*.py"):
        bad = _imports(p) & FORBIDDEN[layer]
        if bad:
            found[str(p.relative_to(ROOT))] = sorted(bad)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(layer):
    offenders = _offenders(layer)
    assert not offenders, f"{layer}/ may not import {sorted(FORBIDDEN[layer])}; move these to the layer above: {offenders}"


def test_the_checker_catches_violations_even_inside_functions(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import mlflow\n    from flows.cli import app\n    from fastapi import FastAPI\n")
    assert {"mlflow", "flows", "fastapi"} <= _imports(bad)


def _module_graph(layers: tuple[str, ...]) -> dict[str, set[str]]:
    """Each project module of ``layers`` → the project modules it imports (lazily or not)."""
    mods = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for lay in layers
        for p in (ROOT / lay).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*path[path.index(d) :], d] if d in path else [m, d]
            if d not in state and (found := visit(d, [*path, d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_tasks_and_flows_import_without_a_cycle():
    assert _cycle(_module_graph(("tasks", "flows"))) is None


def test_the_cycle_check_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
