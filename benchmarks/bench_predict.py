"""One photo's answer: `worldnet predict` cold and warm, and `worldnet serve` until /health answers, fast path beside torch.

    .venv/bin/python benchmarks/bench_predict.py [--cold 5] [--warm 50] [--serve 3] [--photo PHOTO] [--workdir DIR]
    .venv/bin/python benchmarks/bench_predict.py --root .worldnet        # an existing catalog's champion
    .venv/bin/python benchmarks/bench_predict.py --frame 400x300 --no-flip --input-height 224   # the fast view

The fast path (``--engine auto``, the default) runs the backbone's ONNX graph
in ONNX Runtime and the classifier and head in numpy, and reads the registry
from the catalog's model cache with sqlite3; the torch path (``--engine
torch``) is the path before it: MLflow resolves the alias, PyTorch builds the
backbone (timm) and runs the model. Every figure is measured for both in one
run, interleaved, so their ratio is a fact even on a busy machine:

* cold: ``worldnet predict PHOTO`` in a new process, wall time and peak
  resident memory (``os.wait4``'s rusage of that process), median of
  ``--cold``; the very first answer after registration (the fast path resolves
  through MLflow once and fills its cache) is printed apart;
* warm: one more photo in a process that already answered, median of ``--warm``;
* serve: ``worldnet serve`` from its start until ``GET /health`` answers, median of ``--serve``;
* land: the land mesh and countries built from the shapefile against loaded
  from their prepared file (a new process each, the first use as ``predict``
  pays it), median of ``--cold``.

Without ``--root`` it builds a catalog in ``--workdir`` (a temporary folder by
default; give one to reuse it): a worldNET over EfficientNet-Lite0's features
trained in seconds on random ones, seen as Street View is (600×300 frame,
mirror averaged), its real Lite0 graph exported once, registered as
``models:/worldnet@champion``. Its answers mean nothing; their cost is the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "osv5m_sample" / "images"


def build_catalog(root: Path, frame: tuple[int, int], flip: bool, height: int | None = None) -> None:
    """A catalog whose champion is a worldNET over real Lite0 features' width (trained on random features), graph exported."""
    from flows.env import apply_local_defaults

    apply_local_defaults()  # MLflow as quiet as in a run
    import mlflow

    from tasks.registry import register_model_file
    from tasks.tracking import MODEL_NAME, configure_mlflow
    from worldnet.catalog import Catalog
    from worldnet.features.engine import OnnxBackbone, build_engine
    from worldnet.features.names import View
    from worldnet.models.numpy_model import twin_path
    from worldnet.models.predictor import save_worldnet
    from worldnet.models.worldnet_model import TrainConfig, fit_worldnet

    rng = np.random.default_rng(0)
    k = 34  # as many cells as the US West Street View data
    cents = np.stack([rng.uniform(32, 48, k), rng.uniform(-124, -104, k)], 1)
    y = np.arange(k * 8) % k
    X = rng.normal(size=(len(y), 1280)).astype(np.float32)
    cfg = TrainConfig(max_epochs=2, head_epochs=5, members=5)
    wn = fit_worldnet(X, y, cents[y], y.astype(str), X[:40], y[:40], cents, [f"cell{i:02d}" for i in range(k)], mode="crossfit", cfg=cfg)
    wn.frame, wn.view = frame, View(height, flip)
    model = save_worldnet(wn, root / "04_models" / "seen" / "worldnet-crossfit.pt", backbone="efficientnet_lite0")
    t = time.perf_counter()
    graphs = Catalog.from_yaml(root).path("onnx_graphs")
    engine = build_engine("efficientnet_lite0", None, frame, view=wn.view, engine="onnx", graphs_dir=graphs)
    assert isinstance(engine, OnnxBackbone)
    print(f"exported the Lite0 graph in {time.perf_counter() - t:.1f} s: {Path(engine.path).name}", flush=True)
    configure_mlflow(root)
    with mlflow.start_run():
        version = register_model_file(Path(model), Path(engine.path), Path(twin_path(model)))
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version)


def stand_in_photo(path: Path) -> Path:
    rng = np.random.default_rng(1)
    arr = np.clip(rng.normal(120, 50, (480, 640, 3)) + np.linspace(-60, 60, 640)[None, :, None], 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return path


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds, peak resident MB, stdout) of one command in a new process (``os.wait4``: that process's own rusage).

    Linux counts a forked child's memory from its parent's until it execs and keeps that peak, so this process imports
    neither torch nor the models (the catalog is built and the warm figures measured in children of their own).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_ready(cli: list[str], root: str, engine: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds from start until GET /health answers, resident MB then) of `worldnet serve`."""
    import httpx

    port = _free_port()
    t = time.perf_counter()
    proc = subprocess.Popen([*cli, "serve", "--root", root, "--port", str(port), "--engine", engine], env=env, stdout=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worldnet serve --engine {engine} exited ({proc.returncode})")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    seconds = time.perf_counter() - t
                    break
            except httpx.HTTPError:
                time.sleep(0.02)
        rss = next(int(x.split()[1]) for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return seconds, rss / 1024
    finally:
        proc.terminate()
        proc.wait(30)


def warm_latencies(root: str, photo: str, engine: str, n: int) -> list[float]:
    """Seconds per photo, ``n`` times, in a process that has answered three times already.

    One path per process: ONNX Runtime's threads spin for a while after each run, which would tax the torch path's
    next one in a shared process (the caller interleaves processes instead).
    """
    from flows.cli_answer import load_predictor

    predictor = load_predictor("models:/worldnet@champion", Path(root), engine)[0]
    for _ in range(3):
        predictor.predict_paths([photo])
    out = []
    for _ in range(n):
        t = time.perf_counter()
        predictor.predict_paths([photo])
        out.append(time.perf_counter() - t)
    return out


LAND = "from worldnet.geo.land import land_mesh; from worldnet.geo.regions import country_of; land_mesh(); country_of([48.85], [2.35])"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="an existing catalog whose champion to time (default: build one)")
    ap.add_argument("--workdir", default=None, help="where to build (and keep) the stand-in catalog")
    ap.add_argument("--photo", default=None, help="the photo (default: the first OSV-5M sample photo, else a synthetic 640×480 JPEG)")
    ap.add_argument("--frame", default="600x300", help="the stand-in model's frame, WxH")
    ap.add_argument("--no-flip", action="store_true", help="the stand-in model looks without the mirror image")
    ap.add_argument("--input-height", type=int, default=None, help="pixels high the stand-in's backbone sees (default 300)")
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--serve", type=int, default=3)
    ap.add_argument("--stage", choices=("build", "warm"), default=None, help=argparse.SUPPRESS)  # run in a child process
    ap.add_argument("--engine", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage == "build":
        w, h = (int(v) for v in args.frame.lower().split("x"))
        build_catalog(Path(args.root), (w, h), not args.no_flip, args.input_height)
        return
    if args.stage == "warm":
        print(json.dumps(warm_latencies(args.root, args.photo, args.engine, args.warm)))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    root = Path(args.root) if args.root else work / "root"
    me = [sys.executable, __file__, "--frame", args.frame, *(["--no-flip"] if args.no_flip else [])]
    me += ["--input-height", str(args.input_height)] if args.input_height else []
    if not args.root and not (root / "mlflow.db").is_file():  # in a child: this process stays small, so its children's
        subprocess.run([*me, "--stage", "build", "--root", str(root)], check=True)  # peak memory is their own
    shared = sorted(SHARED_PHOTOS.glob("*.jpg")) if SHARED_PHOTOS.is_dir() else []
    photo = args.photo or str(shared[0] if shared else stand_in_photo(work / "photo.jpg"))
    with Image.open(photo) as img:
        size = img.size
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env.setdefault("WORLDNET_CACHE_DIR", str(work / "cache"))
    cli = [sys.executable, "-m", "flows.cli"]
    paths = {"fast": [], "torch": ["--engine", "torch"]}
    predict = [*cli, "predict", photo, "--root", str(root), "--json"]

    load = os.getloadavg()[0]
    print(f"photo {Path(photo).name} ({size[0]}x{size[1]}), catalog {root}, {os.cpu_count()} cores, load {load:.1f}", flush=True)
    if not args.root:  # our own catalog: forget what an earlier run of this benchmark resolved, so "first" is the first
        shutil.rmtree(root / "06_predict" / "_models", ignore_errors=True)
    first: dict[str, tuple[float, float]] = {}
    answers: dict[str, dict] = {}
    for name in ("fast", "torch"):  # the first answer after registration: the fast path resolves through MLflow once
        s, mb, out = run_child([*predict, *paths[name]], env)
        first[name] = (s, mb)
        answers[name] = json.loads(out.splitlines()[-1])
    cold: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    for i in range(args.cold):
        for name in sorted(paths, reverse=bool(i % 2)):
            s, mb, _ = run_child([*predict, *paths[name]], env)
            cold[name].append((s, mb))
            print(f"  cold {name:5s} {s:6.2f} s {mb:6.0f} MB", flush=True)

    land_env = {**env, "WORLDNET_CACHE_DIR": str(work / "land-cache")}
    land: dict[str, list[float]] = {"built": [], "prepared": []}
    run_child([sys.executable, "-c", LAND], land_env)  # prepares
    for i in range(args.cold):
        for name in sorted(land, reverse=bool(i % 2)):
            e = land_env if name == "prepared" else {**env, "WORLDNET_CACHE_DIR": tempfile.mkdtemp(prefix="empty-", dir=work)}
            land[name].append(run_child([sys.executable, "-c", LAND], e)[0])

    ready: dict[str, list[tuple[float, float]]] = {"fast": [], "torch": []}
    for i in range(args.serve):
        for name in sorted(ready, reverse=bool(i % 2)):
            ready[name].append(serve_ready(cli, str(root), "auto" if name == "fast" else "torch", env))
            print(f"  serve {name:5s} ready in {ready[name][-1][0]:.2f} s", flush=True)

    warm: dict[str, list[float]] = {"fast": [], "torch": []}
    rounds = max(1, min(5, args.warm))
    for i in range(rounds):  # a process per path and round, alternating, each timing its share of --warm
        for name in sorted(warm, reverse=bool(i % 2)):
            n = args.warm // rounds + (1 if i < args.warm % rounds else 0)
            cmd = [*me, "--stage", "warm", "--root", str(root), "--photo", photo, "--warm", str(n)]
            warm[name] += json.loads(run_child([*cmd, "--engine", "auto" if name == "fast" else "torch"], env)[2].splitlines()[-1])

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    print(
        f"\nanswers: fast {answers['fast']['lat']:.4f}, {answers['fast']['lon']:.4f}; torch {answers['torch']['lat']:.4f}, "
        f"{answers['torch']['lon']:.4f}"
    )
    print("\n| | fast path | torch path | torch / fast |\n|---|---:|---:|---:|")
    first_label = "first answer after registration, s" if not args.root else "first answer of this run, s"
    rows = [
        (f"cold `predict`, s (median of {args.cold})", med([s for s, _ in cold["fast"]]), med([s for s, _ in cold["torch"]]), "{:.2f}"),
        ("cold `predict`, peak MB", med([m for _, m in cold["fast"]]), med([m for _, m in cold["torch"]]), "{:.0f}"),
        (first_label, first["fast"][0], first["torch"][0], "{:.2f}"),
        (f"warm, ms per photo (median of {args.warm})", med(warm["fast"]) * 1000, med(warm["torch"]) * 1000, "{:.0f}"),
        (
            f"`serve` until /health answers, s (median of {args.serve})",
            med([s for s, _ in ready["fast"]]),
            med([s for s, _ in ready["torch"]]),
            "{:.2f}",
        ),
        ("`serve` peak MB at ready", med([m for _, m in ready["fast"]]), med([m for _, m in ready["torch"]]), "{:.0f}"),
    ]
    for label, a, b, fmt in rows:
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.1f} |")
    print(
        f"\nland mesh and countries in a new process, s (median of {args.cold}): built {med(land['built']):.2f}, "
        f"prepared {med(land['prepared']):.2f} ({med(land['built']) / med(land['prepared']):.1f}x)"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
