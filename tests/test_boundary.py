"""The library never imports the orchestration layer (prefect, mlflow)."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "tasks", "flows"}
ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_does_not_import_orchestration():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN) for p in (ROOT / "worldnet").rglob("*.py") if _imports(p) & FORBIDDEN
    }
    assert not offenders, f"worldnet/ must stay pure; move these imports to tasks/ or flows/: {offenders}"


def test_boundary_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import mlflow\n")
    assert "mlflow" in _imports(bad)
