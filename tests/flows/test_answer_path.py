"""The answer path: `worldnet predict` and `serve` answer on ONNX Runtime and numpy, the registry read with sqlite3.

None of PyTorch, timm, torchvision, Prefect, MLflow (nor SQLAlchemy), scikit-learn or geopandas is imported
for an answer once the registry's answer is cached; `--engine torch` keeps the old path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from PIL import Image

from tasks.model_cache import cache_dir, cached, registered_hash, resolve
from tasks.registry import register_model_file
from tasks.tracking import MODEL_NAME, configure_mlflow, file_hash
from worldnet.catalog import Catalog
from worldnet.features.engine import build_engine
from worldnet.models.numpy_model import twin_path

HEAVY = ["geopandas", "mlflow", "prefect", "sklearn", "sqlalchemy", "timm", "torch", "torchvision"]

PROBE = """
import json, sys
from flows.cli import app
for args in ARGS:
    try:
        app(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"heavy": heavy}))
"""


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _register(root: Path, model_file: Path, alias: str = "champion") -> str:
    """Register ``model_file`` (with its graph and twin) in ``root``'s store, as the pipeline's register stage does."""
    configure_mlflow(root)
    engine = build_engine("tiny_random", frame=(64, 48), engine="onnx", graphs_dir=Catalog.from_yaml(root).path("onnx_graphs"))
    with mlflow.start_run():
        version = register_model_file(model_file, Path(engine.path), twin_path(model_file))  # type: ignore[union-attr]
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, alias, version)
    return version


@pytest.fixture
def registered(model_file, mlflow_store, tmp_path, monkeypatch):
    """A catalog root whose champion is the conftest's tiny model; a land cache of the test's own."""
    monkeypatch.setenv("WORLDNET_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "root"
    mlflow_store(root)
    _register(root, model_file)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env["WORLDNET_CACHE_DIR"] = str(tmp_path / "cache")
    return env


def _cli(args: list[str], env: dict[str, str]) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_predict_imports_none_of_the_training_stack(registered, model_file, tmp_path):
    photos = [str(_photo(tmp_path / f"p{i}.jpg", i)) for i in range(2)]
    env = _env(tmp_path)
    root = str(registered)
    first = _cli(["predict", *photos, "--root", root, "--json"], env)  # resolves through MLflow once; prepares the land mesh
    torch_path = _cli(["predict", *photos, "--root", root, "--json", "--engine", "torch"], env)
    runs = [
        ["predict", *photos, "--root", root, "--json"],
        ["predict", *photos, "--root", root, "--json", "--place"],
        ["predict", photos[0], "--root", root, "--model", str(model_file), "--json"],  # a model file skips the registry
    ]
    probe = f"HEAVY = {HEAVY!r}\nARGS = {runs!r}\n" + PROBE
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert lines[-1] == {"heavy": []}, lines[-1]
    again, place, by_file = lines[:2], lines[2], lines[3]
    for a, b, t in zip(first, again, torch_path, strict=True):
        assert (a["lat"], a["lon"], a["country"]) == (b["lat"], b["lon"], b["country"])  # the cache answers as MLflow's copy did
        assert abs(a["lat"] - t["lat"]) < 1e-2 and abs(a["lon"] - t["lon"]) < 1e-2  # and as the torch path, within rounding
        assert [c["name"] for c in a["top_clusters"]] == [c["name"] for c in t["top_clusters"]]
    assert place["status"] == "ok" and place["n_views"] == 2
    assert (by_file["lat"], by_file["lon"]) == (first[0]["lat"], first[0]["lon"])


def test_the_registry_cache_follows_the_store(registered, model_file, tmp_path, monkeypatch):
    uri = "models:/worldnet@champion"
    first = resolve(uri, registered)
    assert first.via == "mlflow" and first.label == "worldnet v1 (@champion)"
    assert first.model.parent.parent == cache_dir(registered) and twin_path(first.model).is_file()
    assert sorted(p.suffix for p in first.model.parent.iterdir()) == [".npz", ".onnx", ".pt"]
    assert registered_hash(first.model) == file_hash(first.model)  # what the sha256 tag records
    hit = resolve(uri, registered)
    assert (hit.via, hit.model, hit.label) == ("cache", first.model, first.label)
    assert resolve("models:/worldnet/1", registered).label == "worldnet v1"
    # a damaged cached copy is fetched again (and repaired), never served
    raw = bytearray(first.model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    first.model.write_bytes(bytes(raw))
    assert cached(uri, registered) is None
    assert resolve(uri, registered).via == "mlflow" and resolve(uri, registered).via == "cache"
    # the alias moves to a new version: the store says so, and the cache follows
    _register(registered, model_file)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    moved = resolve(uri, registered)
    assert (moved.via, moved.version, moved.label) == ("mlflow", "2", "worldnet v2 (@champion)")
    assert resolve(uri, registered).via == "cache"
    # a tracking server, or a URI the cache does not read: MLflow decides
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert cached(uri, registered) is None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cached("models:/worldnet/latest", registered) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_on_the_fast_path(registered, tmp_path):
    env = _env(tmp_path)
    photo = _photo(tmp_path / "p.jpg", 3)
    _cli(["predict", str(photo), "--root", str(registered), "--json"], env)  # fills the caches, as any earlier answer would
    port = _free_port()
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--root", str(registered), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        health = None
        while time.perf_counter() - t < 60 and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        assert health == {"status": "ok", "model": "worldnet v1 (@champion)", "engine": "onnx"}, proc.stderr.read() if proc.stderr else ""
        res = httpx.post(f"http://127.0.0.1:{port}/predict", files=[("file", ("p.jpg", photo.read_bytes(), "image/jpeg"))], timeout=60)
        assert res.status_code == 200 and res.json()["predictions"][0]["status"] == "ok", res.text
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # the server process never loaded PyTorch's library
            assert "libtorch" not in maps.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
