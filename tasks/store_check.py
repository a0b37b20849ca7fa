"""Is the local MLflow store a SQLite database? Checked before MLflow opens it, with no MLflow import.

A store whose header was overwritten, or that was cut short (a full disk, a
copy that stopped half way), otherwise surfaces as hundreds of lines of
SQLAlchemy tracebacks from whichever command touches it first.
"""

from __future__ import annotations

import os
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
#: The smallest SQLite database: one page of the smallest page size.
SQLITE_MIN_BYTES = 512


class DamagedStoreError(ValueError):
    """The MLflow store is not a readable SQLite database (a user error: one line, move it aside)."""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` tracking URI (None for other stores, or SQLite in memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def check_sqlite_store(path: Path) -> None:
    """Refuse a store file that is not a whole SQLite database; an absent or empty file is a new store. Reads only.

    Raises:
        DamagedStoreError: Naming the file and how to move it aside.
    """
    try:
        size = path.stat().st_size
    except OSError:
        return  # absent (or unreadable: SQLite says so itself)
    if size == 0 or not path.is_file():
        return
    with open(path, "rb") as fh:
        head = fh.read(100)
    why = None
    if size < SQLITE_MIN_BYTES or not head.startswith(SQLITE_HEADER):
        why = "not a SQLite database"
    elif not os.path.exists(f"{path}-wal"):  # with a write-ahead log, pages may not be in the file yet
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        pages = int.from_bytes(head[28:32], "big")
        valid = head[24:28] == head[92:96]  # the header's page count is current only when these agree
        if valid and pages and size < page * pages:
            why = f"cut short: {size} of {page * pages} bytes"
    if why:
        raise DamagedStoreError(
            f"the MLflow store {path} is damaged ({why}): move it aside (mv {path} {path}.bad) and rerun; the catalog's artifacts are kept"
        )


__all__ = ["SQLITE_HEADER", "DamagedStoreError", "check_sqlite_store", "sqlite_path"]
