"""Shared check for crash-safe stages: SIGKILL part-way, rerun, compare with an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from worldnet.io import stray_temp_files


def assert_kill_and_rerun_identical(script: str, tmp_path: Path, *, kill_after: int, pattern: str) -> dict[str, bytes]:
    """Run ``script`` (argv: out_dir [kill_after]) killed after ``kill_after`` files, rerun it, and compare.

    The script must SIGKILL itself when its write counter reaches ``argv[2]``.

    Returns:
        The resumed run's files (``pattern`` matches), which equal the clean run's.
    """
    job = tmp_path / "job.py"
    job.write_text(script)
    killed = subprocess.run([sys.executable, str(job), str(tmp_path / "a"), str(kill_after)])
    assert killed.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "a").glob(f"{pattern}.parquet"))) == kill_after
    subprocess.run([sys.executable, str(job), str(tmp_path / "a")], check=True)
    subprocess.run([sys.executable, str(job), str(tmp_path / "b")], check=True)
    a = {p.name: p.read_bytes() for p in sorted((tmp_path / "a").glob(pattern))}
    b = {p.name: p.read_bytes() for p in sorted((tmp_path / "b").glob(pattern))}
    assert a == b
    assert not stray_temp_files(tmp_path / "a")
    return a
