"""Stage records: whether a stage is up to date is decided from what sits under the catalog root.

After a stage succeeds, ``{root}/_records/{stage}.json`` records the content
hashes of its inputs, its parameters and its code, the hashes of the outputs
it wrote, the catalog root's id and the MLflow run that made them, and the
stage's summary. A later run, on any machine, with any ``PREFECT_HOME``,
skips the stage only if every one of those still matches: a cached stage is a
proven one. A stage whose record is missing, whose inputs, parameters or code
changed, or whose outputs were overwritten or lost, runs again.

This module also holds the catalog root's identity and its lock, so that two
runs on one root never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from upath import UPath

from worldnet.io import write_text_atomic
from worldnet.storage import as_path, is_local, local_path, relative_to

RECORDS = "_records"
ROOT_ID = "root_id.json"


def root_id(root: UPath) -> str:
    """The catalog root's identity (a UUID made on first use), recorded in MLflow so restores never cross roots."""
    f = root / ROOT_ID
    if f.is_file():
        rid: str = json.loads(f.read_text())["root_id"]
        return rid
    rid = uuid.uuid4().hex
    write_text_atomic(f, json.dumps({"root_id": rid, "created": time.time(), "root": str(root)}))
    found: str = json.loads(f.read_text())["root_id"]  # two first runs racing: the last write wins for both
    return found


@lru_cache(maxsize=4096)
def _content_hash(key: str, size: int, mtime_ns: int) -> str:
    """sha256 of one file, memoised within a process by (path, size, mtime): a run hashes each file once."""
    from tasks.tracking import file_hash  # here, so that the CLI reads records and names errors without importing MLflow

    return file_hash(as_path(key))


def content_hash(path: UPath, raw: bool = False) -> str:
    """Content hash of a file or folder (``<missing>`` if absent).

    ``raw`` inputs (the user's photo folders, possibly huge) are fingerprinted
    by names, sizes and modification times instead of bytes.
    """
    if not path.exists():
        return "<missing>"
    files = [path] if path.is_file() else sorted((f for f in path.rglob("*") if f.is_file()), key=str)
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        mtime = int(getattr(st, "st_mtime_ns", 0) or float(getattr(st, "st_mtime", 0) or 0) * 1e9)
        name = f.name if f == path else relative_to(f, path)
        if raw:
            h.update(f"{name}|{st.st_size}|{mtime}\n".encode())
        else:
            h.update(f"{name}|{_content_hash(str(f), int(st.st_size), mtime)}\n".encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def library_digest() -> str:
    """Hash of the whole ``worldnet`` library's source, read once per process."""
    import worldnet

    h = hashlib.sha256()
    for f in sorted(Path(worldnet.__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def code_hash(fn: Callable[..., Any]) -> str:
    """The stage's own source and the whole ``worldnet`` library's: changing either reruns the stage."""
    return hashlib.sha256((inspect.getsource(fn) + library_digest()).encode()).hexdigest()


@dataclass
class StageRecord:
    """What one successful run of a stage consumed and produced."""

    stage: str
    key: str  # hash of inputs + parameters + code: what MLflow restores are matched on
    inputs: dict[str, str]
    params: dict[str, Any]
    code: str
    outputs: dict[str, str]
    root_id: str
    run_id: str
    result: Any
    finished: float


def stage_key(inputs: dict[str, str], params: dict[str, Any], code: str) -> str:
    """One hash of everything a stage's result depends on."""
    return hashlib.sha256(json.dumps([inputs, params, code], sort_keys=True, default=str).encode()).hexdigest()


def record_path(root: UPath, stage: str) -> UPath:
    return root / RECORDS / f"{stage}.json"


def read_record(root: UPath, stage: str) -> StageRecord | None:
    f = record_path(root, stage)
    if not f.is_file():
        return None
    try:
        return StageRecord(**json.loads(f.read_text()))
    except (ValueError, TypeError):  # a damaged record proves nothing: the stage reruns
        return None


def recorded_data_root(root: str) -> str | list[str] | None:
    """The ``data_root`` the ingest stage's record under catalog root ``root`` says it read, as it was given (None if unknown).

    What ``worldnet run --only STAGE`` uses when no ``--data-root`` is given, so that the ingest stage's key is
    unchanged and the finished run is not redone on the default dataset. Reads one JSON file; imports neither
    Prefect nor MLflow.
    """
    r = as_path(root)
    record = read_record(as_path(local_path(r).resolve()) if is_local(r) else r, "ingest")
    found = record.params.get("data_root") if record is not None and isinstance(record.params, dict) else None
    if isinstance(found, str) and found:
        return found
    if isinstance(found, list) and found and all(isinstance(x, str) and x for x in found):
        return list(found)
    return None


def write_record(root: UPath, record: StageRecord) -> UPath:
    f = record_path(root, record.stage)
    write_text_atomic(f, json.dumps(asdict(record), sort_keys=True, default=str))
    return f


def why_stale(record: StageRecord | None, key: str, outputs: dict[str, str], rid: str) -> str | None:
    """None if ``record`` proves the stage up to date, else the reason it must run."""
    if record is None:
        return "no record of an earlier run"
    if record.root_id != rid:
        return "its record belongs to another catalog root"
    if record.key != key:
        return "its inputs, parameters or code changed"
    if record.outputs != outputs:
        changed = sorted(k for k in set(record.outputs) | set(outputs) if record.outputs.get(k) != outputs.get(k))
        return f"its outputs changed or went missing since it ran ({', '.join(changed[:3])})"
    return None


class RootBusyError(RuntimeError):
    """Another worldnet run holds the catalog root."""


def _lock_file(root: UPath, tracking: Path) -> Path:
    """A local file to lock for ``root``: in the root itself when local, else beside the MLflow store."""
    if is_local(root):
        return local_path(root) / ".lock"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return tracking / f".lock-{digest}"


@contextmanager
def root_lock(root: UPath, tracking: Path, wait_s: float = 0.0, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the catalog root for one run; a second run waits up to ``wait_s`` seconds, then refuses.

    An OS file lock (``flock``): the kernel releases it when the process
    ends, so a killed run never leaves the root locked. For an object-store
    root the lock lives beside the local MLflow store, so it guards runs from
    this machine only; runs from several machines share a root through
    stage records and atomic writes, not this lock.

    Raises:
        RootBusyError: The root is still held after ``wait_s`` seconds.
    """
    path = _lock_file(root, tracking)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held for the whole run
    deadline = time.monotonic() + wait_s
    told = False
    try:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise RootBusyError(
                        f"catalog root {root} is in use by {holder}; wait for that run to finish, "
                        f"or pass --wait-lock SECONDS to wait for it"
                    ) from None
                if on_wait and not told:
                    on_wait(f"catalog root {root} is in use by {holder}; waiting up to {wait_s:.0f}s")
                    told = True
                time.sleep(0.5)
        fh.seek(0)
        fh.truncate()
        fh.write(f"worldnet run pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock
