"""Load on `worldnet serve`: concurrent clients posting photos to a real server on 127.0.0.1.

    .venv/bin/python benchmarks/bench_serve.py [--requests 500] [--clients 8] [--model models:/worldnet@champion --root .worldnet]

Starts ``worldnet serve`` as a user would (its own process, EfficientNet-Lite0
on the default engine), sends ``--requests`` POST /predict requests of one
640×480 JPEG each from ``--clients`` threads, and prints requests/s, latency
percentiles, errors, and the server's resident memory at the start, the end
and its peak (sampled every 0.2 s), which should stay flat.

Without ``--model`` it serves a worldNET head fitted in a second on random
features over the real Lite0 backbone: the answers mean nothing, the cost is
the real one (the backbone is nearly all of it).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from worldnet.models.predictor import save_worldnet
from worldnet.models.worldnet_model import TrainConfig, fit_worldnet


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stand_in_model(path: Path) -> Path:
    """A worldNET over EfficientNet-Lite0 features (1280-d), its head fitted on random features."""
    rng = np.random.default_rng(0)
    cents = np.array([[40.4, -3.7], [13.7, 100.5], [42.4, -71.1], [-33.9, 151.2]])
    X = rng.normal(size=(200, 1280)).astype(np.float32)
    y = np.arange(200) % 4
    wn = fit_worldnet(
        X,
        y,
        cents[y],
        y.astype(str),
        X[:40],
        y[:40],
        cents,
        ["Madrid", "Bangkok", "Boston", "Sydney"],
        cfg=TrainConfig(max_epochs=2, head_epochs=2),
    )
    wn.frame = (400, 300)
    return save_worldnet(wn, path, backbone="efficientnet_lite0")


def _photo() -> bytes:
    rng = np.random.default_rng(1)
    arr = np.clip(rng.normal(120, 50, (480, 640, 3)) + np.linspace(-60, 60, 640)[None, :, None], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--model", default=None, help="models:/... or a .pt file (default: a stand-in over Lite0)")
    ap.add_argument("--root", default=None, help="catalog root holding the MLflow store, with a registry --model")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = args.model or str(_stand_in_model(tmp / "worldnet.pt"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = args.root or str(tmp / "root")
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", model, "--root", root, "--port", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{url}/health", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not start")
        photo = _photo()
        files = {"file": ("street.jpg", photo, "image/jpeg")}
        for _ in range(args.clients):  # warm-up: first requests allocate buffers
            httpx.post(f"{url}/predict", files=files, timeout=120)
        rss_start = _rss_mb(server.pid)
        peak = [rss_start]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(_rss_mb(server.pid))
                time.sleep(0.2)

        latencies: list[float] = []
        errors: list[str] = []
        counter = iter(range(args.requests))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(timeout=120) as c:
                while True:
                    with lock:
                        if next(counter, None) is None:
                            return
                    t0 = time.perf_counter()
                    try:
                        r = c.post(f"{url}/predict", files=files)
                        ok = r.status_code == 200 and r.json()["predictions"][0]["status"] == "ok"
                        if not ok:
                            errors.append(f"{r.status_code} {r.text[:100]}")
                    except httpx.HTTPError as exc:
                        errors.append(type(exc).__name__)
                    latencies.append(time.perf_counter() - t0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        done.set()
        rss_end = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(10)

    q = statistics.quantiles(latencies, n=100)
    print(f"server: {health['model']} on {health['engine']}, {os.cpu_count()} cores; photo 640x480 JPEG ({len(photo) / 1024:.0f} KB)")
    print(f"requests {len(latencies)} from {args.clients} concurrent clients in {wall:.1f} s; errors {len(errors)}")
    print(f"throughput: {len(latencies) / wall:.1f} requests/s")
    print(f"latency ms: p50 {q[49] * 1000:.0f}  p95 {q[94] * 1000:.0f}  p99 {q[98] * 1000:.0f}  max {max(latencies) * 1000:.0f}")
    print(f"server RSS MB: start {rss_start:.0f}  end {rss_end:.0f}  peak {max(peak):.0f}  (end - start {rss_end - rss_start:+.0f})")
    if errors:
        print("first errors:", errors[:3])


if __name__ == "__main__":
    main()
