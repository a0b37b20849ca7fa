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

from tasks.store_check import check_sqlite_store, sqlite_path
from worldnet import defaults
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
    return local_path(catalog_root) if is_local(catalog_root) else Path(defaults.ROOT)


def configure_mlflow(root: Path) -> str:
    """Point MLflow at ``{root}/mlflow.db`` (unless the user set ``MLFLOW_TRACKING_URI``); returns the URI.

    Raises:
        DamagedStoreError: The SQLite store is not a whole SQLite database (the file is left as it is).
    """
    user = user_tracking_uri()
    uri = user or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    store = sqlite_path(uri)
    if store is not None:  # before MLflow opens it: a damaged file is one line, not SQLAlchemy's tracebacks
        check_sqlite_store(store)
    if not user:
        _SET_BY_US.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with _store_lock(None if user else root):
        artifact_root = (root / "mlartifacts").resolve().as_uri()
        exp = mlflow.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            mlflow.create_experiment(EXPERIMENT, artifact_location=None if user else artifact_root)
        elif not user and store is not None and exp.artifact_location != artifact_root and exp.artifact_location.endswith("/mlartifacts"):
            relocate_artifacts(store, exp.artifact_location, artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    return uri


#: Columns of MLflow's SQLite store that hold where artifacts are.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def relocate_artifacts(store: Path, old: str, new: str) -> int:
    """Point the store's artifact locations from ``old`` to ``new`` (a catalog root that was moved or copied); returns rows changed.

    MLflow records artifact locations as absolute URIs, so a root moved with
    ``mv`` (or copied to another machine) could not load its champion, and a
    rerun wrote its artifacts back under the old path. Every location under
    the old ``mlartifacts`` folder is rewritten to the same place under the
    new one, in one transaction.
    """
    import sqlite3

    old_path, new_path = old.removeprefix("file://"), new.removeprefix("file://")
    changed = 0
    with sqlite3.connect(store) as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
        for table, column in _ARTIFACT_COLUMNS:
            if table not in tables:
                continue
            for before, after in ((old, new), (old_path, new_path)):
                cur = db.execute(
                    f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",  # noqa: S608 - fixed names
                    (after, len(before) + 1, len(before), before),
                )
                changed += cur.rowcount
    return changed


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
    check_registered_bytes(model, found[0])
    return found[0]


#: The model version tag holding the sha256 of the registered ``.pt`` (see :func:`check_registered_bytes`).
SHA256_TAG = "worldnet.sha256"


def check_registered_bytes(model: str, path: Path) -> None:
    """Refuse a registered model whose file is not, byte for byte, the one registered.

    Registration tags each version with its file's sha256; a damaged copy in
    the artifact store would otherwise load and answer, slightly wrong.

    Raises:
        ValueError: The bytes differ from the recorded hash.
    """
    version = _model_version(model)
    recorded = version.tags.get(SHA256_TAG) if version is not None else None
    if recorded and file_hash(path) != recorded:
        raise ValueError(
            f"{model} (version {version.version}): its model file {path.name} does not match the sha256 recorded when it was "
            "registered, so it is damaged; register it again (`worldnet run --only register`) or serve another version"
        )


def _model_version(model: str):  # type: ignore[no-untyped-def]
    """The registry's ModelVersion for ``models:/NAME@ALIAS`` or ``models:/NAME/N`` (None if it cannot say)."""
    body = model.removeprefix("models:/")
    client = mlflow.MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, number = body.partition("/")
        return client.get_model_version(name, number)
    except Exception:  # noqa: BLE001 - a model the registry cannot name has no recorded hash to check
        return None


def registry_label(model: str) -> str:
    """``worldnet v3 (@champion)`` for ``models:/worldnet@champion``; the URI itself if the registry cannot say.

    Call after :func:`registry_model_file` (which points MLflow at the store).
    """
    version = _model_version(model)
    if version is None:
        return model
    alias = model.split("@", 1)[1] if "@" in model else None
    return f"{version.name} v{version.version}" + (f" (@{alias})" if alias else "")


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


ABANDONED_NOTE = "the process running it ended without closing it (killed?); marked FAILED by the next run on this catalog root"


def fail_abandoned_runs(root_id: str) -> list[str]:
    """Mark this root's MLflow runs still ``RUNNING`` as ``FAILED``; returns their ids.

    Call it holding the root's lock (:func:`tasks.records.root_lock`): then no
    live process can own such a run, so each was left by a run that was killed
    (``kill -9``, power loss) before MLflow could close it.
    """
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        experiment_ids=[e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`worldnet.root_id` = '{root_id}' and attributes.status = 'RUNNING'",
    )
    for r in runs:
        client.set_tag(r.info.run_id, "worldnet.abandoned", ABANDONED_NOTE)
        client.set_terminated(r.info.run_id, status="FAILED")
    return [r.info.run_id for r in runs]
