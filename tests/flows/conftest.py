"""One Prefect test server for the session's flow tests (real API, temporary database), and shared small fixtures.

The server starts once (about 10-20 s) when a test first asks for ``harness``; tests that need a Prefect of their
own (another database and home) still open their own ``prefect_test_harness`` inside it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.config import PipelineConfig
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.models.predictor import save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

DATA_STAGES = ["ingest", "debias", "split", "shard", "extract_features"]
CENTROIDS = np.array([[40.4, -3.7], [13.7, 100.5], [42.4, -71.1]])
NAMES = ["Madrid", "Bangkok", "Boston"]


@pytest.fixture(scope="session")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small synthetic world of four cities on four continents (64x48 photos)."""
    data = tmp_path_factory.mktemp("world") / "data"
    generate(SynthConfig(out=data, cities=["Madrid", "Bangkok", "Boston", "Lima"], per_city=14, size=(64, 48)), progress=False)
    return data


def small_cfg(data, root) -> PipelineConfig:
    """The scale-out tests' pipeline: the tiny random backbone, shards of 8, the world's own 64x48 frame, one MLP."""
    return PipelineConfig(
        data_root=str(data),
        root=str(root),
        backbone="tiny_random",
        n_unseen=1,
        shard_size=8,
        image_width=64,
        image_height=48,
        members=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def threads_run(harness, mlflow_store, world, tmp_path_factory):
    """The data stages of ``world`` on the default runner (threads) into a local folder: ``(root, result)``.

    The reference that the scale-out runs (Dask workers, an S3 root) must reproduce byte for byte; made once for
    the session. Tests only read its shards and features.
    """
    from flows.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("threads") / "root"
    mlflow_store(root)
    before = os.environ.get("MLFLOW_TRACKING_URI")  # set by the run; no test's own (see tests/conftest.py)
    try:
        out = run_pipeline(small_cfg(world, root), stages=DATA_STAGES)
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return root, out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A worldNET over the tiny random backbone (3 clusters, 64x48 frame), trained in a second on random features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 32)).astype(np.float32)
    y = np.arange(90) % 3
    latlon = CENTROIDS[y] + rng.normal(scale=0.2, size=(90, 2))
    wn = fit_worldnet(X, y, latlon, y.astype(str), X[:15], y[:15], CENTROIDS, NAMES, cfg=TrainConfig(max_epochs=3, head_epochs=3))
    wn.frame = (64, 48)
    return save_worldnet(wn, tmp_path_factory.mktemp("model") / "worldnet.pt", backbone="tiny_random")
