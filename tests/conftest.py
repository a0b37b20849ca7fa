"""Keep Prefect and MLflow local and quiet, and share small generated fixtures.

The environment is set here (before any test imports prefect or mlflow), so a
bare ``pytest`` behaves like ``make test``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
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


@pytest.fixture(scope="session")
def _empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store exactly as MLflow makes it on first use (schema migrated, its Default experiment, no run)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("mlflow-store")
    store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlruns").as_uri())
    store.engine.dispose()
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db"]  # the whole database is this one file (no WAL)
    return folder / "mlflow.db"


@pytest.fixture(scope="session")
def mlflow_store(_empty_mlflow_store) -> Callable[..., Path]:
    """``mlflow_store(folder)`` puts an empty MLflow store at ``folder/mlflow.db`` (or ``mlflow_store(file=path)``).

    A new store costs MLflow about 5 s of schema migrations on 2 cores. Where a test's run only needs a store, its
    root gets a copy of one made once a session; the run then creates its experiment in it as in a new store. Tests of
    making a store (``test_two_processes_creating_a_fresh_mlflow_store_both_succeed``, the CLI's subprocess tests)
    start without one.
    """

    def put(folder: str | os.PathLike[str] | None = None, *, file: str | os.PathLike[str] | None = None) -> Path:
        target = Path(file) if file is not None else Path(folder or ".") / "mlflow.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        assert not target.exists(), f"{target} exists: the test meant a new store"
        shutil.copyfile(_empty_mlflow_store, target)
        return target

    return put
