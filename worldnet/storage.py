"""Where artifacts live: a local folder or any fsspec URL (``s3://``, ``gs://``, ``memory://`` ...).

Every path worldnet reads or writes goes through :func:`as_path`, which gives a
``pathlib``-like ``UPath``: a plain ``pathlib.Path`` subclass for local paths
(so ``open``, ``os.replace`` and every library keep working) and an fsspec-
backed path for anything else. The few things fsspec paths cannot do (hand a
file name to polars, numpy or torch) have helpers here that work for both.

What "atomic" means per backend (see :func:`worldnet.io.atomic_path`):

* **local / file://**: write a temporary file in the same folder, ``fsync``,
  ``os.replace`` onto the final name. POSIX rename is atomic: readers see the
  old file or the new one, never a half-written one.
* **object stores (s3, gs, az ...)**: write a local temporary file, then upload
  it in one ``put_file``. An object becomes visible only when its single PUT or
  its multipart upload completes, so a killed upload leaves *no* object.
  (Rename there is copy-then-delete, which is why it is not used.)
* **memory://**: the file is committed to the in-process store when the upload
  closes; it is for tests, and it is private to one process, so stages that
  would fan out to worker processes refuse it (:func:`shared_across_processes`).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from upath import UPath

if TYPE_CHECKING:  # polars costs a third of a second to import; the answer path reads no Parquet
    import polars as pl

#: fsspec protocols that are this machine's own filesystem.
LOCAL_PROTOCOLS = ("", "file", "local")


def as_path(path: str | os.PathLike[str] | UPath) -> UPath:
    """A ``UPath`` for a local path or fsspec URL (local ones are real ``pathlib.Path`` s)."""
    if isinstance(path, UPath):
        return path
    return UPath(path)


def is_local(path: str | os.PathLike[str] | UPath) -> bool:
    """Whether ``path`` is on this machine's filesystem."""
    return as_path(path).protocol in LOCAL_PROTOCOLS


def local_path(path: str | os.PathLike[str] | UPath) -> Path:
    """The plain ``pathlib.Path`` of a local path (raises for remote ones)."""
    p = as_path(path)
    if not is_local(p):
        raise ValueError(f"{p} is not on the local filesystem")
    return Path(p.path)


def shared_across_processes(path: str | os.PathLike[str] | UPath) -> bool:
    """Whether other processes see what this one writes under ``path`` (``memory://`` is per-process)."""
    return as_path(path).protocol != "memory"


def url(path: str | os.PathLike[str] | UPath) -> str:
    """A string that names ``path`` unambiguously (a plain path locally, a URL otherwise)."""
    p = as_path(path)
    return str(Path(p.path).resolve()) if is_local(p) else str(p)


def relative_to(path: UPath, root: UPath) -> str:
    """``path`` relative to ``root``, as a POSIX string."""
    if is_local(path) and is_local(root):
        # as written first: a photo linked in from elsewhere (a subset assembled without copying) is still under the
        # folder it was listed from, though its target is not
        lexical = Path(os.path.abspath(local_path(path)))
        base = Path(os.path.abspath(local_path(root)))
        if lexical.is_relative_to(base):
            return lexical.relative_to(base).as_posix()
        return local_path(path).resolve().relative_to(local_path(root).resolve()).as_posix()
    p, r = str(path).rstrip("/"), str(root).rstrip("/")
    if not p.startswith(r + "/"):
        raise ValueError(f"{path} is not under {root}")
    return p[len(r) + 1 :]


def sorted_glob(folder: str | os.PathLike[str] | UPath, pattern: str) -> list[UPath]:
    """Files in ``folder`` matching ``pattern``, ordered by name (the same on every backend)."""
    d = as_path(folder)
    if not d.is_dir():
        return []
    return sorted(d.glob(pattern), key=lambda p: p.name)


def read_parquet(path: str | os.PathLike[str] | UPath, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet file from any backend."""
    import polars as pl

    p = as_path(path)
    if is_local(p):
        return pl.read_parquet(local_path(p), columns=columns)
    with p.open("rb") as fh:
        return pl.read_parquet(fh, columns=columns)


def load_npy(path: str | os.PathLike[str] | UPath) -> np.ndarray:
    """Load a ``.npy`` array from any backend."""
    p = as_path(path)
    if is_local(p):
        arr: np.ndarray = np.load(local_path(p))
        return arr
    return np.load(io.BytesIO(p.read_bytes()))


def npy_rows(path: str | os.PathLike[str] | UPath) -> int:
    """Rows of a ``.npy`` array, from its header alone (no data read)."""
    with as_path(path).open("rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape: tuple[int, ...] = read_header(fh)[0]
    return int(shape[0]) if shape else 0


def open_input(path: str | os.PathLike[str] | UPath) -> Any:
    """A binary file object for reading (caller closes it)."""
    return as_path(path).open("rb")


@contextmanager
def local_copy(path: str | os.PathLike[str] | UPath) -> Iterator[Path]:
    """A local file with ``path`` 's content (the file itself when local; a temporary download otherwise).

    For APIs that only take file names, such as MLflow's ``log_model`` artifacts.
    """
    p = as_path(path)
    if is_local(p):
        yield local_path(p).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="worldnet-download-") as d:
        dest = Path(d) / p.name
        p.fs.get_file(p.path, str(dest))
        yield dest


__all__ = [
    "LOCAL_PROTOCOLS",
    "as_path",
    "is_local",
    "load_npy",
    "local_copy",
    "local_path",
    "npy_rows",
    "open_input",
    "read_parquet",
    "relative_to",
    "shared_across_processes",
    "sorted_glob",
    "url",
]
