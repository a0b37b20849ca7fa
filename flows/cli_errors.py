"""How the CLI answers an error: one line and an exit code for what the user can fix, a traceback only with ``--debug``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from worldnet import defaults


#: Errors that mean "the input or an option is wrong": one line, exit 2, no traceback (``--debug`` shows it).
def user_errors() -> tuple[type[BaseException], ...]:
    from tasks.records import RootBusyError
    from tasks.store_check import DamagedStoreError

    # WeightsNotFoundError is a FileNotFoundError; DamagedStoreError (a damaged MLflow store) is a ValueError, named here to say so
    return (ValueError, FileNotFoundError, KeyError, RootBusyError, DamagedStoreError)


def store_file(root: str) -> Path | None:
    """The SQLite file of the MLflow store a run on ``root`` opens (None when ``MLFLOW_TRACKING_URI`` names another kind).

    As :func:`tasks.tracking.tracking_root` places it, without importing MLflow.
    """
    import os

    from tasks.store_check import sqlite_path
    from worldnet.storage import is_local, local_path

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return sqlite_path(uri)
    return (local_path(root) if is_local(root) else Path(defaults.ROOT)) / "mlflow.db"


def environment_error(exc: BaseException, root: str, store: Path | None = None) -> tuple[str, int] | None:
    """A failure of the machine or its set-up, not of worldnet or its input: (one line, exit code), else None.

    Matched along the exception's causes by errno, class name or SQLite's message, so that neither SQLAlchemy
    nor botocore need be imported: a full disk (exit 1), missing object-store credentials or a store SQLite
    cannot read (exit 2).
    """
    import errno

    from worldnet.storage import is_local

    where = f"the MLflow store {store}" if store is not None else "the MLflow store"
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        text = str(e)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            path = e.filename or root
            return f"no space left on the disk holding {path}: free some (or choose another --root) and rerun; finished stages are kept", 1
        if "database or disk is full" in text or (type(e).__name__ == "OperationalError" and "disk is full" in text):
            return f"no space left on the disk holding {where}: free some and rerun; finished stages are kept", 1
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError") or "Unable to locate credentials" in text:
            url = root if not is_local(root) else "the s3:// paths given"
            return f"no credentials for {url}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (AWS_PROFILE)", 2
        if "database disk image is malformed" in text or "file is not a database" in text:
            aside = f" (mv {store} {store}.bad)" if store is not None else ""
            return f"{where} is damaged (SQLite cannot read it): move it aside{aside} and rerun; the catalog's artifacts are kept", 2
    return None


def fail_environment(exc: Exception, root: str, store: Path | None, debug: bool) -> typer.Exit:
    """``exc`` as its one line and exit code if it is an environment failure (:func:`environment_error`); else re-raised."""
    found = None if debug else environment_error(exc, root, store)
    if found is None:
        raise exc
    typer.echo(f"error: {found[0]}", err=True)
    return typer.Exit(found[1])


class HideUserErrorTracebacks(logging.Filter):
    """Drop Prefect's log records of a user error: the CLI prints that error as one line (``--debug`` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, user_errors()) or environment_error(exc, ".") is not None):
            return False
        # "Finished in state Failed(...)": the same error again; the CLI prints it (and a crash still has its traceback)
        return not (record.levelno >= logging.ERROR and "Finished in state Failed" in record.getMessage())


def quiet_prefect_user_errors() -> None:
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(HideUserErrorTracebacks())
    for handler in logging.getLogger("prefect").handlers + logging.getLogger().handlers:
        handler.addFilter(HideUserErrorTracebacks())


#: Parameters whose flag is not their own name with dashes (the library's de-bias parameters, renamed config fields).
FLAG_OF_PARAMETER = {
    "cluster_strategy": "--cluster",
    "backbone_weights": "--weights",
    "debias_strategy": "--debias",
    "unseen_cities": "--unseen",
    "strategy": "--debias",
    "cap": "--debias-cap",
    "max_share": "--debias-max-share",
    "max_drop": "--debias-max-drop",
    "from_stage": "--from",
}


def flagged(message: str) -> str:
    """A library error as the CLI says it: each ``parameter=value`` of a known parameter reads ``--flag value``.

    The library names its Python parameters (``input_height=5``); a user of the CLI set a flag (``--input-height 5``).
    """
    import re
    from dataclasses import fields

    from tasks.config import PipelineConfig

    known = {f.name for f in fields(PipelineConfig)} | set(FLAG_OF_PARAMETER) | {"weights", "only", "folds", "group"}

    def to_flag(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if name not in known:
            return m.group(0)
        flag = FLAG_OF_PARAMETER.get(name, "--" + name.replace("_", "-"))
        if name == "strict" and value == "True":
            return flag
        return f"{flag} {value.strip(chr(39))}".rstrip()

    return re.sub(r"(?<![\w-])([a-z][a-z0-9_]*)=('[^'\s]*'|[^\s,;)]*[^\s,;):]|)", to_flag, message)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {flagged(message)}", err=True)
    return typer.Exit(2)


def user_error(exc: BaseException, debug: bool = False) -> typer.Exit:
    """A user error as its first line (exit 2); ``--debug`` re-raises it with its traceback."""
    if debug:
        raise exc
    text = str(exc).strip()
    return fail(text.splitlines()[0] if text else type(exc).__name__)
