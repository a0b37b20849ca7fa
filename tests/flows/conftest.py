"""One Prefect test server per test module of the flows (real API, temporary database)."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from tasks.stages import PipelineConfig
from worldnet.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small synthetic world of four cities on four continents (64x48 photos)."""
    data = tmp_path_factory.mktemp("world") / "data"
    generate(SynthConfig(out=data, cities=["Madrid", "Bangkok", "Boston", "Lima"], per_city=14, size=(64, 48)), progress=False)
    return data


def small_cfg(data, root) -> PipelineConfig:
    """The scale-out tests' pipeline: the tiny random backbone, shards of 8, the world's own 64x48 frame."""
    return PipelineConfig(
        data_root=str(data),
        root=str(root),
        backbone="tiny_random",
        n_unseen=1,
        shard_size=8,
        image_width=64,
        image_height=48,
        progress=False,
    )
