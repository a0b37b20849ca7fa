"""A cached stage is a proven one: stage records under the catalog root decide what reruns.

Each test reproduces a scenario where the old cache (Prefect's, keyed on
"the output file exists") served another run's data, and asserts the
correct result.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline
from tasks.config import STAGES, PipelineConfig
from tasks.records import RootBusyError, root_lock
from worldnet.data.synthetic import SynthConfig, generate

MODEL_STAGES = ["cluster", "train_classifier", "train_interpolation", "train_baselines", "evaluate", "report"]
#: Every stage through evaluate: what makes the predictions and metrics a test reads (report and register only add time).
TO_EVALUATE = list(STAGES[: STAGES.index("evaluate") + 1])


def _world(path, cities, seed=0):
    generate(SynthConfig(out=path, cities=cities, per_city=12, size=(64, 48), seed=seed), progress=False)
    return path


def _cfg(tmp_path, data, **kw) -> PipelineConfig:
    return PipelineConfig(
        data_root=str(data), root=str(tmp_path / "root"), backbone="tiny_random", n_unseen=1, shard_size=32, members=1, progress=False, **kw
    )


@pytest.fixture()
def worlds(tmp_path):
    d = _world(tmp_path / "d", ["Madrid", "PRS", "Bangkok", "Boston"])
    d1 = _world(tmp_path / "d1", ["Melbourne", "Osaka", "Chicago", "Rome"], seed=1)
    return d, d1


def _cities(cfg: PipelineConfig) -> set[str]:
    return set(cfg.catalog().load("predictions", protocol="seen")["city"].to_list())


def test_a_fresh_prefect_home_reruns_nothing_and_one_parameter_reruns_exactly_its_downstream(
    harness, mlflow_store, tmp_path, worlds, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _cfg(tmp_path, worlds[0])
    mlflow_store(cfg.root)
    pipeline(cfg)  # on the session's Prefect server
    metrics = cfg.catalog().load("metrics", protocol="seen")
    # a second user: another Prefect database and home; only the catalog root is shared
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path / "other-prefect-storage"))
    with prefect_test_harness(server_startup_timeout=120):
        again = pipeline(cfg)
        assert {again["states"][s] for s in STAGES if s != "register"} == {"Up to date"}, again["states"]
        assert cfg.catalog().load("metrics", protocol="seen").equals(metrics)
        # one parameter of the heads: the heads and everything downstream rerun, nothing upstream
        cfg.crossfit_weight_decay = 10.0
        changed = pipeline(cfg)
    ran = {s for s, st in changed["states"].items() if st != "Up to date"}
    assert ran == {"train_interpolation", "evaluate", "report", "register"}, changed["states"]
    assert "parameters" in changed["reasons"]["train_interpolation"]


def test_switching_data_roots_back_and_forth_never_serves_the_other_data(harness, mlflow_store, tmp_path, worlds, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    d, d1 = worlds
    mlflow_store(_cfg(tmp_path, d).root)
    # what is checked is the seen protocol's predictions and scores: its stages up to evaluate are what the five runs need
    seen = {"protocols": ["seen"]}
    first = pipeline(_cfg(tmp_path, d, **seen), stages=TO_EVALUATE)
    cities_d = _cities(_cfg(tmp_path, d, **seen))
    pipeline(_cfg(tmp_path, d1, **seen), stages=TO_EVALUATE)
    assert _cities(_cfg(tmp_path, d1, **seen)).isdisjoint(cities_d)
    third = pipeline(_cfg(tmp_path, d, **seen), stages=TO_EVALUATE)
    assert third["states"]["ingest"] != "Up to date"  # the old cache said Cached here and trained on d1
    assert _cities(_cfg(tmp_path, d, **seen)) == cities_d
    assert third["evaluate"]["seen"]["worldnet_mean_km"] == pytest.approx(first["evaluate"]["seen"]["worldnet_mean_km"])
    # toggling the seed 0 -> 1 -> 0 gives run 1's result, not run 2's de-biased manifest
    pipeline(_cfg(tmp_path, d, seed=1, **seen), stages=TO_EVALUATE)
    back = pipeline(_cfg(tmp_path, d, seed=0, **seen), stages=TO_EVALUATE)
    assert back["states"]["debias"] != "Up to date"
    assert back["evaluate"]["seen"]["worldnet_mean_km"] == pytest.approx(first["evaluate"]["seen"]["worldnet_mean_km"])


def test_only_restores_nothing_from_another_root_sharing_the_mlflow_store(harness, mlflow_store, tmp_path, worlds, monkeypatch):
    d, d1 = worlds
    monkeypatch.chdir(tmp_path)  # a store MLflow creates itself puts artifacts under ./mlruns: here, not in the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_store(file=tmp_path / 'shared-mlflow.db')}")
    a = PipelineConfig(data_root=str(d), root=str(tmp_path / "a"), backbone="tiny_random", n_unseen=1, members=1, progress=False)
    b = PipelineConfig(data_root=str(d1), root=str(tmp_path / "b"), backbone="tiny_random", n_unseen=1, members=1, progress=False)
    pipeline(b, stages=TO_EVALUATE)
    pipeline(a, stages=TO_EVALUATE)  # the newest run logging every path is now root a's
    lost = b.catalog().path("predictions", protocol="seen")
    lost.unlink()
    out = pipeline(b, only="report")
    restored_or_rerun = out["restored"] or out["states"]["evaluate"] != "Up to date"
    assert restored_or_rerun
    assert _cities(b) == set(b.catalog().load("manifest_raw")["city"].to_list()) & _cities(b)
    assert _cities(b).isdisjoint(_cities(a))


def _hold_lock(root: str, tracking: str) -> None:  # pragma: no cover - runs in a child process
    from upath import UPath

    with root_lock(UPath(root), __import__("pathlib").Path(tracking)):
        time.sleep(600)


def test_a_second_run_on_one_root_is_refused_and_a_killed_run_frees_the_root(tmp_path, worlds):
    cfg = _cfg(tmp_path, worlds[0])
    root = cfg.catalog().root
    ctx = mp.get_context("spawn")
    holder = ctx.Process(target=_hold_lock, args=(str(root), str(cfg.tracking_root())))
    holder.start()
    deadline = time.monotonic() + 30
    while not (root / ".lock").exists() or "pid" not in (root / ".lock").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    t = time.monotonic()
    with pytest.raises(RootBusyError, match="in use by worldnet run pid") as err, root_lock(root, cfg.tracking_root(), wait_s=1.0):
        pass
    assert "--wait-lock" in str(err.value)
    assert time.monotonic() - t < 5
    os.kill(holder.pid, signal.SIGKILL)  # a killed run leaves no stuck lock
    holder.join()
    with root_lock(root, cfg.tracking_root(), wait_s=5.0):
        pass


def test_two_processes_creating_a_fresh_mlflow_store_both_succeed(tmp_path):
    code = (
        "import sys; from pathlib import Path; from tasks.tracking import configure_mlflow; "
        "configure_mlflow(Path(sys.argv[1])); print('ok')"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-500:] for _, e in outs]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    assert mlflow.get_experiment_by_name("worldnet") is not None


def test_a_changed_photo_is_reframed_and_a_corrupt_feature_shard_is_redone(harness, mlflow_store, tmp_path, worlds, monkeypatch):
    """A record proves content: a photo replaced under its name and a feature file damaged in place are both noticed."""
    import numpy as np
    from PIL import Image

    from worldnet.features.extract import load_features

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _cfg(tmp_path, worlds[0])
    mlflow_store(cfg.root)
    data_stages = list(STAGES[: STAGES.index("extract_features") + 1])  # what the two cases concern; the models would only add time
    pipeline(cfg, stages=data_stages)
    feats = cfg.catalog().path("feature_shards")
    X0, labels0 = load_features(feats)
    manifest = cfg.catalog().load("manifest_debiased")
    changed = manifest.sort("image_id")["image_id"][1]
    photo = manifest.filter(manifest["image_id"] == changed)["path"][0]
    Image.new("RGB", Image.open(photo).size, (250, 20, 200)).save(photo, quality=90)  # new bytes, same name
    npy = sorted(feats.glob("feat-*.npy"))[0]
    raw = bytearray(npy.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # still a readable .npy, with wrong numbers
    npy.write_bytes(bytes(raw))
    again = pipeline(cfg, stages=data_stages)
    assert again["states"]["shard"] != "Up to date" and again["states"]["extract_features"] != "Up to date", again["states"]
    X1, labels1 = load_features(feats)
    assert labels1["image_id"].to_list() == labels0["image_id"].to_list()
    row = labels1["image_id"].to_list().index(changed)
    others = np.arange(len(X1)) != row
    assert np.array_equal(X1[others], X0[others])  # the damaged rows were redone, the rest as before
    assert not np.allclose(X1[row], X0[row])  # the new pixels were framed and embedded
