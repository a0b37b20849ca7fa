"""``models:/worldnet@champion`` for an answer, resolved without importing MLflow when nothing changed.

Resolving an alias through MLflow costs about 3 s of a cold ``worldnet
predict`` (MLflow and SQLAlchemy imported, the store opened and checked, the
artifacts downloaded). What an answer needs from the registry is small: which
version the alias names, that version's recorded sha256 (the
``worldnet.sha256`` tag that registration sets, :data:`tasks.tracking.SHA256_TAG`),
and its files. So the first resolution goes through MLflow as before, and
copies the model file, its numpy twin and its ONNX graph into the catalog's
``model_cache`` (``{root}/06_predict/_models``, beside a ``registry.json``
naming what each URI resolved to). Every later one reads the alias, the
version and the tag from the MLflow SQLite store with the standard library's
``sqlite3`` (read-only) and checks the cached ``.pt`` against the tag, byte for
byte, before using it; where the registered file is local, its size and
modification time must also be what they were, so a damaged copy in the
artifact store is still refused (by MLflow's check) rather than hidden.

MLflow decides whenever this cannot: the alias moved, the tag differs or is
absent, a cached file is missing or damaged, the URI is neither
``models:/NAME@ALIAS`` nor ``models:/NAME/N``, or the store is not a local
SQLite file (``MLFLOW_TRACKING_URI`` naming a server).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.store_check import check_sqlite_store, sqlite_path
from worldnet.io import write_bytes_atomic, write_text_atomic

#: The version tag registration sets to the sha256 of the registered ``.pt`` (as :data:`tasks.tracking.SHA256_TAG`).
SHA256_TAG = "worldnet.sha256"
#: What ``registry.json`` says is in the cache; bumped when its layout changes.
CACHE_FORMAT = 1

_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))")


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model's files, as an answer uses them."""

    model: Path
    #: Where its ONNX graph may be stored (the registry's shipped graph), searched before the catalog's ``onnx_graphs``.
    graphs: Path | None
    #: ``worldnet v3 (@champion)``.
    label: str
    version: str
    #: ``cache`` (read with sqlite3, MLflow not imported) or ``mlflow``.
    via: str


def registered_hash(path: Path) -> str:
    """What the ``worldnet.sha256`` tag records of a model file: :func:`tasks.tracking.file_hash` of one file (its name, then its bytes)."""
    h = hashlib.sha256(path.name.encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir(root: str | os.PathLike[str]) -> Path:
    """The catalog's ``model_cache``: registered models copied for answers, and twins of model files made here."""
    from worldnet.catalog import Catalog

    return Path(str(Catalog.from_yaml(root).path("model_cache")))


def _store(root: Path) -> Path | None:
    """The SQLite file of the MLflow store the registry lives in; None when it is not a local SQLite file."""
    tracking = sys.modules.get("tasks.tracking")  # MLflow imported already: the URI this process set is not the user's
    user = tracking.user_tracking_uri() if tracking is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if user:
        return sqlite_path(user)
    return (root / "mlflow.db").resolve()


def _label(name: str, version: str, alias: str | None) -> str:
    return f"{name} v{version} (@{alias})" if alias else f"{name} v{version}"


@dataclass(frozen=True)
class RegistryState:
    """What the store says of a registered version."""

    name: str
    version: str
    #: The ``worldnet.sha256`` tag (None for a version registered before the tag existed).
    sha256: str | None
    #: Where its artifacts are (``file:///...`` for a local artifact store).
    storage: str


def registry_state(uri: str, store: Path) -> RegistryState | None:
    """What ``uri`` names, read from the store with sqlite3, or None where MLflow must say.

    Raises:
        DamagedStoreError: The store file is not a whole SQLite database.
    """
    m = _URI.fullmatch(uri)
    if m is None or not store.is_file():
        return None
    check_sqlite_store(store)
    name, alias, version = m["name"], m["alias"], m["version"]
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            if alias is not None:
                rows = db.execute("select version from registered_model_aliases where name = ? and alias = ?", (name, alias)).fetchall()
                if len(rows) != 1:
                    return None
                version = str(rows[0][0])
            live = db.execute(
                "select coalesce(storage_location, '') from model_versions where name = ? and version = ? and status = 'READY' "
                "and coalesce(current_stage, '') != 'Deleted_Internal'",
                (name, int(version)),
            ).fetchall()
            if len(live) != 1:
                return None
            tags = db.execute(
                "select value from model_version_tags where name = ? and version = ? and key = ?", (name, int(version), SHA256_TAG)
            ).fetchall()
    except sqlite3.Error:  # an older or newer schema, a lock held too long: MLflow knows its own store
        return None
    return RegistryState(name, str(version), str(tags[0][0]) if len(tags) == 1 else None, str(live[0][0]))


def _source(state: RegistryState, file_name: str) -> Path | None:
    """The registered model file in a local artifact store (None elsewhere): its stat is part of what the cache checks."""
    if not state.storage.startswith("file://"):
        return None
    path = Path(state.storage.removeprefix("file://")) / "artifacts" / file_name
    return path if path.is_file() else None


def _stamp(path: Path | None) -> list[int] | None:
    if path is None:
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_index(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((folder / "registry.json").read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None
    return entries if isinstance(entries, dict) else {}


def cached(uri: str, root: Path) -> ResolvedModel | None:
    """``uri`` from the cache, if the store still names the same version with the same sha256 and the bytes match it."""
    store = _store(root)
    if store is None:
        return None
    state = registry_state(uri, store)
    if state is None or state.sha256 is None:
        return None
    folder = cache_dir(root)
    entry = _read_index(folder).get(uri)
    if not entry or (entry.get("store"), entry.get("version"), entry.get("sha256")) != (str(store), state.version, state.sha256):
        return None
    model = folder / entry["dir"] / entry["model"]
    try:
        if _stamp(_source(state, model.name)) != entry.get("source"):  # the registered file changed since: MLflow checks it
            return None
    except OSError:
        return None
    if not model.is_file() or registered_hash(model) != state.sha256:  # a damaged or replaced copy is fetched again, never served
        return None
    m = _URI.fullmatch(uri)
    return ResolvedModel(model, model.parent, _label(state.name, state.version, m["alias"] if m else None), state.version, "cache")


def resolve(uri: str, root: str | os.PathLike[str]) -> ResolvedModel:
    """A registered model's files for an answer: from the cache when it is current (no MLflow), else through MLflow.

    Raises:
        FileNotFoundError: The registry has no such model (MLflow's answer).
        ValueError: The registered bytes do not match the recorded sha256.
        DamagedStoreError: The store is not a whole SQLite database.
    """
    root = Path(root)
    hit = cached(uri, root)
    return hit if hit is not None else _through_mlflow(uri, root)


def _through_mlflow(uri: str, root: Path) -> ResolvedModel:
    """Resolve with MLflow (:func:`tasks.tracking.registry_model_file` checks the bytes), then cache what it resolved."""
    from tasks.tracking import registry_label, registry_model_file

    pt = registry_model_file(uri, root)
    label = registry_label(uri)
    store = _store(root)
    state = registry_state(uri, store) if store is not None else None
    if state is None or state.sha256 is None or registered_hash(pt) != state.sha256:
        return ResolvedModel(pt, pt.parent, label, state.version if state else "?", "mlflow")  # nothing the cache could check later
    folder = cache_dir(root)
    sub = f"{state.name}-v{state.version}-{state.sha256[:12]}"
    try:
        for f in [pt, *sorted(pt.parent.glob("*.npz")), *sorted(pt.parent.glob("*.onnx"))]:
            write_bytes_atomic(folder / sub / f.name, f.read_bytes())  # again, so a damaged copy is repaired
        entries = {k: v for k, v in _read_index(folder).items() if k != uri}
        entries[uri] = {
            "store": str(store),
            "version": state.version,
            "sha256": state.sha256,
            "dir": sub,
            "model": pt.name,
            "source": _stamp(_source(state, pt.name)),
        }
        write_text_atomic(folder / "registry.json", json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1))
        _forget_unused(folder, {e["dir"] for e in entries.values()})
    except OSError:  # a read-only catalog: answer from MLflow's copy, and resolve through MLflow next time too
        return ResolvedModel(pt, pt.parent, label, state.version, "mlflow")
    return ResolvedModel(folder / sub / pt.name, folder / sub, label, state.version, "mlflow")


#: A cached version no URI names any more is removed once it is this old (a process may still be reading it).
FORGET_AFTER_S = 3600


def _forget_unused(folder: Path, keep: set[str]) -> None:
    """Remove cached versions no URI resolves to any more (an alias that moved on an hour ago or more)."""
    now = time.time()
    for d in folder.iterdir():
        if d.is_dir() and d.name not in keep and d.name != "twins" and now - d.stat().st_mtime > FORGET_AFTER_S:
            shutil.rmtree(d, ignore_errors=True)


__all__ = ["RegistryState", "ResolvedModel", "cache_dir", "cached", "registered_hash", "registry_state", "resolve"]
