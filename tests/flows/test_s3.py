"""A real S3 API: a local moto server on 127.0.0.1 for the session, the catalog root in its bucket, Dask workers writing to it.

The server is moto's (``moto[server]``, a dev dependency), started here, so
CI needs nothing installed by hand. s3fs reaches it through the standard
``AWS_ENDPOINT_URL`` variable, which Dask's worker processes inherit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from flows.pipeline import run_pipeline
from flows.predict import predict_batch
from flows.runners import make_task_runner
from tests.flows.conftest import DATA_STAGES, small_cfg
from worldnet.models.predictor import save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet
from worldnet.storage import as_path, relative_to

BUCKET = "worldnet-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, with one bucket; the environment points s3fs at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": url})
    fs.mkdir(BUCKET)
    yield fs
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    s3fs.S3FileSystem.clear_instance_cache()


def _digests(root, subs=("02_intermediate/shards", "03_features/tiny_random")) -> dict[str, str]:
    base = as_path(root)
    out = {}
    for sub in subs:
        for f in (base / sub).rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                if f.name.startswith("shard-") and f.name.endswith(".json"):  # a sidecar: the store's own object identity
                    meta = json.loads(data)  # (size, ETag) is recorded on object stores only
                    meta.pop("object", None)
                    data = json.dumps(meta, sort_keys=True).encode()
                out[relative_to(f, base)] = hashlib.sha256(data).hexdigest()
    return out


def _model(tmp_path):
    rng = np.random.default_rng(0)
    cents = np.array([[40.4, -3.7], [13.7, 100.5], [42.4, -71.1]])
    X = rng.normal(size=(90, 32)).astype(np.float32)
    y = np.arange(90) % 3
    wn = fit_worldnet(X, y, cents[y], y.astype(str), X[:15], y[:15], cents, ["a", "b", "c"], cfg=TrainConfig(max_epochs=3, head_epochs=3))
    wn.frame = (64, 48)
    return save_worldnet(wn, tmp_path / "model.pt", backbone="tiny_random")


def test_s3_root_on_two_dask_workers_is_byte_identical_to_a_local_folder(
    harness, mlflow_store, s3, world, threads_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a URL root keeps its MLflow store in ./.worldnet
    mlflow_store(tmp_path / ".worldnet")
    root = f"s3://{BUCKET}/run-a"
    # one cluster of two single-threaded worker processes for the stages and for predict-batch, reached by its address
    # as an existing cluster is (the runner starting a LocalCluster of its own: tests/flows/test_runners.py)
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        _on_two_workers(s3, world, threads_run, tmp_path, root, cluster.scheduler_address)


def _on_two_workers(s3, world, threads_run, tmp_path, root: str, address: str) -> None:
    local_root, local = threads_run  # the same world and configuration in a local folder, on the default runner
    remote = run_pipeline(small_cfg(world, root), stages=DATA_STAGES, task_runner=make_task_runner("dask", dask_address=address))
    assert remote["extract_features"]["worker_processes"] == 2
    a, b = _digests(local_root), _digests(root)
    assert any(k.endswith(".npy") for k in a) and a == b
    assert local["shard"]["shards"] == remote["shard"]["shards"] >= 4
    # no temporary or half-written object anywhere in the bucket
    assert not [k for k in s3.find(f"{BUCKET}/run-a") if ".tmp" in k or k.endswith(".part")]

    # predict-batch: photos in, one table out, shards and parts in the bucket, on the same two workers
    photos = world / "Images" / "Madrid"
    model = _model(tmp_path)
    out_l = predict_batch(str(photos), "june", str(model), str(tmp_path / "local"), 4, progress=False)
    out_r = predict_batch.with_options(task_runner=make_task_runner("dask", dask_address=address))(
        str(photos), "june", str(model), root, 4, progress=False
    )
    assert out_l["predicted"] == out_r["predicted"] > 0
    assert _digests(tmp_path / "local", ("06_predict",)) == _digests(root, ("06_predict",))


def test_a_noop_rerun_on_s3_reads_no_shard_body(harness, mlflow_store, s3, world, tmp_path, monkeypatch, caplog):
    """Completeness on an object store is the sidecar's recorded size and ETag, not a re-download of each shard."""
    monkeypatch.chdir(tmp_path)
    mlflow_store(tmp_path / ".worldnet")
    root = f"s3://{BUCKET}/run-b"
    cfg = small_cfg(world, root)
    cfg.shard_size = 2  # over 20 shards
    first = run_pipeline(cfg, stages=["ingest", "debias", "split", "shard"])
    assert first["shard"]["shards"] >= 20
    from worldnet.data.shards import plan_shards

    table = cfg.catalog().load("manifest_debiased").join(cfg.catalog().load("splits"), on="image_id")
    from worldnet.data.shards import ShardSpec

    with caplog.at_level(logging.DEBUG, logger="s3fs"):
        plan = plan_shards(table, cfg.catalog().path("image_shards"), ShardSpec(2, 64, 48))
    assert plan.jobs == [] and plan.skipped == plan.n_shards
    body_reads = [r.getMessage() for r in caplog.records if "get_object" in r.getMessage() and "shard-" in r.getMessage()]
    sidecar_reads = [m for m in body_reads if ".json" in m]
    shard_reads = [m for m in body_reads if ".parquet" in m]
    print(
        f"\nno-op plan of {first['shard']['shards']} shards: {len(caplog.records)} s3fs calls, "
        f"{len(sidecar_reads)} sidecar reads, {len(shard_reads)} shard body reads"
    )
    assert shard_reads == []


KILLED_WORKER = """
import os, signal, sys
import worldnet.features.extract as ex
from worldnet.features.backbones import build_backbone

shards, out, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
written = [0]
real = ex._write_feature_shard

def write_then_maybe_die(*args, **kw):
    real(*args, **kw)
    written[0] += 1
    if written[0] == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker lost mid-stage, with later shards in flight

ex._write_feature_shard = write_then_maybe_die
ex.extract_features(build_backbone("tiny_random", frame=(64, 48)), shards, out, batch_size=4, progress=False)
"""


def test_a_worker_killed_mid_stage_leaves_nothing_half_written_and_the_rerun_completes(
    harness, mlflow_store, s3, world, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    mlflow_store(tmp_path / ".worldnet")
    root = f"s3://{BUCKET}/run-c"
    run_pipeline(small_cfg(world, root), stages=["ingest", "debias", "split", "shard"])
    shards = f"{root}/02_intermediate/shards"
    n_shards = len([k for k in s3.find(f"{BUCKET}/run-c/02_intermediate/shards") if k.endswith(".parquet")])
    assert n_shards >= 4
    script = tmp_path / "worker.py"
    script.write_text(KILLED_WORKER)
    killed = subprocess.run([sys.executable, str(script), shards, f"{root}/feats-a", "2"], env=os.environ.copy())
    assert killed.returncode == -signal.SIGKILL
    s3.invalidate_cache()  # other processes wrote to the bucket: list it afresh
    done = [k for k in s3.find(f"{BUCKET}/run-c/feats-a") if k.endswith(".parquet")]
    assert len(done) == 2  # exactly the committed shards: the one in flight left nothing behind
    assert not [k for k in s3.find(f"{BUCKET}/run-c") if ".tmp" in k or k.endswith(".part")]
    subprocess.run([sys.executable, str(script), shards, f"{root}/feats-a", "0"], env=os.environ.copy(), check=True)  # the rerun
    subprocess.run([sys.executable, str(script), shards, f"{root}/feats-b", "0"], env=os.environ.copy(), check=True)  # uninterrupted
    s3.invalidate_cache()
    a = {k.rsplit("/", 1)[1]: s3.cat(k) for k in s3.find(f"{BUCKET}/run-c/feats-a")}
    b = {k.rsplit("/", 1)[1]: s3.cat(k) for k in s3.find(f"{BUCKET}/run-c/feats-b")}
    assert len(a) == 3 * n_shards and a == b
