"""Keep Prefect and MLflow local and quiet, and share small generated fixtures.

The environment is set here (before any test imports prefect or mlflow), so a
bare ``pytest`` behaves like ``make test``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from flows.env import apply_local_defaults

_HOME = tempfile.mkdtemp(prefix="worldnet-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_HOME, "prefect"))
apply_local_defaults()

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``real_data`` tests with a clear reason when ../shared/data is absent."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real_data: {SHARED_DATA} is absent (it sits beside the repo)")
    for item in items:
        if "real_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder of real material (only used by real_data tests)."""
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _tracking_uri_stays_in_its_test():
    """``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; left set, a later test's pipeline would take it
    for the user's choice and write to the earlier test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
