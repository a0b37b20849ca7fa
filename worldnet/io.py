"""Atomic writes: a killed run never leaves a half-written file behind.

Every writer in worldnet goes through here. Locally: write to a temporary name
in the same folder, flush to disk, then rename over the final name (atomic on
POSIX). On an fsspec store (``s3://``, ``gs://`` ...): write a local temporary
file, then upload it in one ``put_file``, which an object store commits only
when the whole object has arrived. See :mod:`worldnet.storage` for what each
backend guarantees.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from upath import UPath

from worldnet.storage import as_path, is_local, local_path

TMP_SUFFIX = ".tmp-worldnet"

PathArg = str | os.PathLike[str] | UPath


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


@contextmanager
def atomic_path(path: PathArg) -> Iterator[Path]:
    """Yield a local temporary path; on success it becomes ``path`` in one step.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = as_path(path)
    if not is_local(target):
        with tempfile.TemporaryDirectory(prefix="worldnet-upload-") as d:
            tmp = Path(d) / target.name
            yield tmp
            fs = target.fs
            parent = target.parent.path
            if parent and not fs.exists(parent):
                fs.makedirs(parent, exist_ok=True)
            fs.put_file(str(tmp), target.path)
        return
    final = local_path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would lock out the team sharing this root
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: PathArg, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: PathArg, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_with_atomic(path: PathArg, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)`` (e.g. ``df.write_parquet``) and commit on success."""
    with atomic_path(path) as tmp:
        writer(tmp)


def stray_temp_files(root: PathArg) -> list[UPath]:
    """Temporary files an interrupted writer left under ``root`` (should be none)."""
    return sorted(as_path(root).rglob(f"*{TMP_SUFFIX}"), key=str)
