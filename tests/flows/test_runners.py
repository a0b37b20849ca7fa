"""Scale-out: the per-shard stages on a Dask LocalCluster, and a catalog root on a non-local fsspec store."""

from __future__ import annotations

import hashlib

import fsspec
import pytest

from flows.pipeline import run_pipeline
from flows.runners import make_task_runner
from tests.flows.conftest import DATA_STAGES, small_cfg
from worldnet.storage import as_path, relative_to


def _digests(root) -> dict[str, str]:
    """sha256 of every image and feature shard file under a catalog root, by relative path."""
    base = as_path(root)
    out = {}
    for sub in ("02_intermediate/shards", "03_features/tiny_random"):
        for f in (base / sub).rglob("*"):
            if f.is_file():
                out[relative_to(f, base)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def test_runner_options_are_checked():
    with pytest.raises(ValueError, match="unknown task runner"):
        make_task_runner("ray")
    with pytest.raises(ValueError, match="need --task-runner dask"):
        make_task_runner("threads", dask_workers=2)
    with pytest.raises(ValueError, match="not both"):
        make_task_runner("dask", dask_address="tcp://127.0.0.1:8786", dask_workers=2)


def test_dask_local_cluster_output_identical_to_default_runner(harness, mlflow_store, world, threads_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow_store(tmp_path / "dask")
    threads_root, threads = threads_run  # the default runner's run of the same world and configuration
    dask = run_pipeline(small_cfg(world, tmp_path / "dask"), stages=DATA_STAGES, task_runner=make_task_runner("dask", dask_workers=2))
    assert threads["shard"]["shards"] >= 4
    assert dask["extract_features"]["worker_processes"] == 2, dask["extract_features"]
    assert threads["extract_features"]["worker_processes"] == 1
    a, b = _digests(threads_root), _digests(tmp_path / "dask")
    assert any(k.endswith(".npy") for k in a) and any(k.startswith("02_intermediate/shards/shard-") for k in a)
    assert a == b


def test_memory_root_runs_the_whole_pipeline(harness, mlflow_store, world, tmp_path, monkeypatch):
    """Every artifact goes through fsspec: a memory:// root gets them all, the local disk none (but MLflow's store)."""
    monkeypatch.chdir(tmp_path)  # the MLflow store of a URL root goes to ./.worldnet
    mlflow_store(tmp_path / ".worldnet")
    root = "memory://worldnet-test/root"
    try:
        out = run_pipeline(small_cfg(world, root))
        cat = small_cfg(world, root).catalog()
        assert not cat.local
        for name in ("manifest_raw", "rejects", "manifest_debiased", "splits", "image_shards", "shard_rejects", "feature_shards", "report"):
            assert cat.exists(name), name
        for proto in ("seen", "unseen"):
            assert cat.exists("worldnet_model", protocol=proto, mode="crossfit")
            assert "worldNET" in cat.load("metrics", protocol=proto)["model"].to_list()
        assert out["extract_features"]["images"] == cat.load("splits").height
        assert out["register"]["version"] == "1"
        local = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
        assert local == {".worldnet"}, local
        assert (tmp_path / ".worldnet" / "mlflow.db").is_file()  # not the previous run's store
        # a store other processes cannot see is refused, with what to do instead, before any work
        with pytest.raises(ValueError, match="memory:// lives in one process"):
            run_pipeline(small_cfg(world, root), only="shard", task_runner=make_task_runner("dask", dask_workers=1))
    finally:
        fsspec.filesystem("memory").rm("/worldnet-test", recursive=True)


def test_flows_and_tasks_pickle_for_dask_workers():
    """Dask ships the flow (in the run context) and each task to workers: none may drag a lock along."""
    import cloudpickle

    from flows.pipeline import pipeline
    from tasks.per_shard import extract_one_task, shard_one_task

    for obj in (pipeline, shard_one_task, extract_one_task):
        assert cloudpickle.loads(cloudpickle.dumps(obj)).name == obj.name
