"""A plain (non-editable) install of worldnet finds its data catalog."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_plain_install_ships_the_catalog_and_finds_it(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", str(REPO), "--no-deps", "--no-build-isolation", "--target", str(target)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "data_catalog" / "catalog.yml").is_file()
    out = subprocess.run(
        [sys.executable, "-c", "import worldnet.catalog as c; print(c.DEFAULT_CATALOG)"],
        cwd=tmp_path,  # away from the source tree: only the installed copy can answer
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert Path(out.stdout.strip()) == target / "data_catalog" / "catalog.yml"
