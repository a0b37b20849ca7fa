"""The storage layer: local paths and fsspec URLs behave the same, and writes are all-or-nothing on both."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest

from worldnet.io import stray_temp_files, write_text_atomic, write_with_atomic
from worldnet.storage import (
    as_path,
    is_local,
    load_npy,
    local_copy,
    npy_rows,
    read_parquet,
    relative_to,
    shared_across_processes,
    sorted_glob,
)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        yield tmp_path / "store"
        return
    import fsspec

    yield as_path("memory://storage-test/store")
    fsspec.filesystem("memory").rm("/storage-test", recursive=True)


def test_roundtrip_and_listing(root):
    df = pl.DataFrame({"a": [1, 2, 3]})
    write_with_atomic(as_path(root) / "t" / "b.parquet", lambda tmp: df.write_parquet(tmp))
    write_with_atomic(as_path(root) / "t" / "a.npy", lambda tmp: tmp.write_bytes(_npy(np.ones((4, 2), np.float16))))
    assert read_parquet(as_path(root) / "t" / "b.parquet").equals(df)
    assert npy_rows(as_path(root) / "t" / "a.npy") == 4
    assert load_npy(as_path(root) / "t" / "a.npy").dtype == np.float16
    assert [p.name for p in sorted_glob(as_path(root) / "t", "*")] == ["a.npy", "b.parquet"]
    assert sorted_glob(as_path(root) / "absent", "*") == []
    assert relative_to(as_path(root) / "t" / "a.npy", as_path(root)) == "t/a.npy"
    with local_copy(as_path(root) / "t" / "a.npy") as f:
        assert np.load(f).shape == (4, 2)


def test_failed_write_leaves_nothing(root):
    target = as_path(root) / "x" / "out.txt"
    write_text_atomic(target, "old")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_with_atomic(target, crash)
    assert target.read_text() == "old"
    assert stray_temp_files(root) == []


def test_backend_facts(tmp_path):
    assert is_local(tmp_path) and is_local(f"file://{tmp_path}") and not is_local("s3://bucket/x")
    assert shared_across_processes("s3://bucket/x") and not shared_across_processes("memory://x")
    with pytest.raises(ValueError, match="not under"):
        relative_to(as_path("memory://a/b"), as_path("memory://c"))
