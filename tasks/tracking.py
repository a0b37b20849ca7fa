"""MLflow set-up: SQLite store and local artifacts under the catalog root by default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import mlflow

EXPERIMENT = "worldnet"
MODEL_NAME = "worldnet"


def configure_mlflow(root: Path) -> str:
    """Point MLflow at ``{root}/mlflow.db`` (unless ``MLFLOW_TRACKING_URI`` is set); returns the URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifact_root = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return uri


def file_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes) in sorted order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent if path.is_file() else path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
