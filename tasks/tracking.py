"""MLflow set-up: SQLite store and local artifacts under the catalog root by default."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from upath import UPath

from worldnet.storage import as_path, is_local, local_path, relative_to

EXPERIMENT = "worldnet"
MODEL_NAME = "worldnet"


#: URIs this process set itself: ``mlflow.set_tracking_uri`` also exports
#: ``MLFLOW_TRACKING_URI``, which must not then pass for the user's choice.
_SET_BY_US: set[str] = set()


def user_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI`` if the user set it (not if an earlier run in this process did)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri and uri not in _SET_BY_US else None


def tracking_root(catalog_root: str) -> Path:
    """Local folder for the MLflow store: the catalog root, or ``./.worldnet`` when the root is a URL.

    (A team sharing an object store shares an MLflow server too: set
    ``MLFLOW_TRACKING_URI`` and this folder is not used.)
    """
    return local_path(catalog_root) if is_local(catalog_root) else Path(".worldnet")


def configure_mlflow(root: Path) -> str:
    """Point MLflow at ``{root}/mlflow.db`` (unless the user set ``MLFLOW_TRACKING_URI``); returns the URI."""
    user = user_tracking_uri()
    uri = user or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    if not user:
        _SET_BY_US.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with _store_lock(None if user else root):
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            artifact_root = None if user else (root / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return uri


@contextmanager
def _store_lock(root: Path | None) -> Iterator[None]:
    """Serialise the first touch of a local SQLite store: MLflow creates and migrates its tables then,
    and two processes doing it at once crash one of them (``table ... already exists``)."""
    if root is None:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".mlflow-store.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def registry_model_file(model: str, tracking_root: Path) -> Path:
    """Download a registered worldNET (``models:/worldnet@champion``) and return its ``.pt`` file.

    Raises:
        FileNotFoundError: The registry has no such model, or it holds no ``.pt`` file.
    """
    configure_mlflow(tracking_root)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for "not there"
        raise FileNotFoundError(f"cannot load {model} from {mlflow.get_tracking_uri()} ({exc}); run `worldnet demo` first") from exc
    found = sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{model} has no worldnet .pt artifact")
    return found[0]


def file_hash(path: Path | UPath) -> str:
    """sha256 of a file, or of a folder's files (names and bytes) in sorted order (any fsspec backend)."""
    h = hashlib.sha256()
    p = as_path(path)
    files = [p] if p.is_file() else sorted((f for f in p.rglob("*") if f.is_file()), key=str)
    for f in files:
        h.update((f.name if f is p else relative_to(f, p)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
