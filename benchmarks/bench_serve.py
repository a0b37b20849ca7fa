"""Load on `worldnet serve`: concurrent clients posting photos to a real server on 127.0.0.1.

    .venv/bin/python benchmarks/bench_serve.py [--requests 500] [--clients 8] [--model models:/worldnet@champion --root .worldnet]
    .venv/bin/python benchmarks/bench_serve.py --heavy [--heavy-clients 3] [--heavy-photos 16] [--rounds 4] [--quick]

Starts ``worldnet serve`` as a user would (its own process, EfficientNet-Lite0
on the default engine), sends ``--requests`` POST /predict requests of one
640×480 JPEG each from ``--clients`` threads, and prints requests/s, latency
percentiles, errors, and the server's resident memory at the start, the end
and its peak (sampled every 0.2 s), which should stay flat.

``--heavy`` is the heavy-client scenario instead: one ordinary client sends
one-photo requests, one after another, in rounds that alternate between a
quiet server and one where ``--heavy-clients`` clients keep sending requests
of ``--heavy-photos`` large PNGs (20-56 MP each, drawn with a fixed seed into
a temporary folder; PNG has no draft mode, so each is decoded at full size).
It prints the ordinary client's p50/p95 alone and beside the heavy clients,
side by side with their ratio, the heavy requests' statuses and latency, and
the server's memory. The server's per-request pixel budget is raised so that
the heavy requests are decoded (the worst case); ``--request-megapixels 100``
keeps the default, which refuses them (413) from their headers. ``--quick``
scales everything down (4 PNGs of 4-8 MP, 2 rounds of 6 requests) to check the
script runs.

Without ``--model`` it serves a worldNET head fitted in a second on random
features over the real Lite0 backbone: the answers mean nothing, the cost is
the real one (the backbone is nearly all of it).
"""

from __future__ import annotations

import argparse
import collections
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


def _large_pngs(folder: Path, n: int, megapixels: tuple[float, float], seed: int = 0) -> list[Path]:
    """``n`` PNG photos of ``megapixels`` (low, high) each, 4:3, drawn with ``seed``: a coarse random mosaic, so a
    56 MP photo compresses to about 0.3 MB and generation takes well under a second per photo."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        pixels = rng.uniform(*megapixels) * 1e6
        h = int((pixels * 3 / 4) ** 0.5)
        w = int(pixels / h)
        tiles = rng.integers(0, 256, (h // 64 + 1, w // 64 + 1, 3), dtype=np.uint8)
        path = folder / f"large-{i:02d}.png"
        Image.fromarray(tiles).resize((w, h), Image.Resampling.NEAREST).save(path, compress_level=6)
        paths.append(path)
    return paths


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _percentiles(xs: list[float]) -> tuple[float, float]:
    """(p50, p95) in ms."""
    if len(xs) < 2:
        return (xs[0] * 1000, xs[0] * 1000) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=100, method="inclusive")  # within the samples: a few dozen requests per condition
    return q[49] * 1000, q[94] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--model", default=None, help="models:/... or a .pt file (default: a stand-in over Lite0)")
    ap.add_argument("--root", default=None, help="catalog root holding the MLflow store, with a registry --model")
    ap.add_argument("--heavy", action="store_true", help="the heavy-client scenario instead of the load one")
    ap.add_argument("--heavy-clients", type=int, default=3)
    ap.add_argument("--heavy-photos", type=int, default=16, help="large PNGs per heavy request")
    ap.add_argument("--rounds", type=int, default=4, help="quiet/heavy round pairs, interleaved")
    ap.add_argument("--per-round", type=int, default=10, help="ordinary requests per round")
    ap.add_argument("--request-megapixels", type=float, default=None, help="the server's budget (default: the heavy requests fit)")
    ap.add_argument("--quick", action="store_true", help="a small run that checks the script works")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.clients = min(args.requests, 40), min(args.clients, 4)
        args.heavy_photos, args.rounds, args.per_round = min(args.heavy_photos, 4), min(args.rounds, 2), min(args.per_round, 6)

    tmp = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    model = args.model or str(_stand_in_model(tmp / "worldnet.pt"))
    heavy: list[Path] = []
    if args.heavy:
        heavy = _large_pngs(tmp, args.heavy_photos, (4, 8) if args.quick else (20, 56))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = args.root or str(tmp / "root")
    cmd = [sys.executable, "-m", "flows.cli", "serve", "--model", model, "--root", root, "--port", str(port)]
    if heavy:
        budget = args.request_megapixels or max(100.0, sum(w * h for w, h in map(_size, heavy)) / 1e6 + 1)
        cmd += ["--max-request-megapixels", str(budget)]
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
        if heavy:
            _heavy_scenario(url, server.pid, health, photo, heavy, args)
            return
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


def _heavy_scenario(url: str, pid: int, health: dict[str, str], photo: bytes, heavy: list[Path], args: argparse.Namespace) -> None:
    """One ordinary client, alone and beside heavy clients, in interleaved rounds; prints both side by side."""
    ordinary = {"file": ("street.jpg", photo, "image/jpeg")}
    big = [("file", (p.name, p.read_bytes(), "image/png")) for p in heavy]
    sizes = [_size(p) for p in heavy]
    alone: list[float] = []
    beside: list[float] = []
    heavy_latency: list[float] = []
    codes: collections.Counter[int | str] = collections.Counter()
    counting = threading.Lock()
    errors: list[str] = []
    rss_start = _rss_mb(pid)
    peak = [rss_start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(_rss_mb(pid))
            time.sleep(0.2)

    def ordinary_run(into: list[float]) -> None:
        with httpx.Client(timeout=300) as c:
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                r = c.post(f"{url}/predict", files=ordinary)
                into.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:100]}")

    def heavy_client(stop: threading.Event, sending: threading.Event) -> None:
        with httpx.Client(timeout=600) as c:
            while not stop.is_set():
                sending.set()
                t0 = time.perf_counter()
                try:
                    code: int | str = c.post(f"{url}/predict", files=big).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                heavy_latency.append(time.perf_counter() - t0)
                with counting:
                    codes[code] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t_start = time.perf_counter()
    for _ in range(args.rounds):
        ordinary_run(alone)
        stop = threading.Event()
        sending = [threading.Event() for _ in range(args.heavy_clients)]
        clients = [threading.Thread(target=heavy_client, args=(stop, e)) for e in sending]
        for t in clients:
            t.start()
        for e in sending:
            e.wait()
        time.sleep(0.5)  # the heavy requests are uploaded and decoding
        ordinary_run(beside)
        stop.set()
        for t in clients:
            t.join()
    wall = time.perf_counter() - t_start
    done.set()
    rss_end = _rss_mb(pid)

    mp = [w * h / 1e6 for w, h in sizes]
    request_mb = sum(len(b[1][1]) for b in big) / 1e6
    cores = os.cpu_count()
    print(f"server: {health['model']} on {health['engine']}, {cores} cores; ordinary photo 640x480 JPEG ({len(photo) / 1024:.0f} KB)")
    print(
        f"heavy clients: {args.heavy_clients} x {len(big)} PNGs of {min(mp):.0f}-{max(mp):.0f} MP "
        f"({sum(mp):.0f} MP, {request_mb:.1f} MB per request); {args.rounds} rounds of {args.per_round} ordinary requests "
        f"alone, then beside them, interleaved ({wall:.0f} s)"
    )
    a50, a95 = _percentiles(alone)
    b50, b95 = _percentiles(beside)
    print("ordinary client latency ms     p50      p95     max")
    print(f"  alone                     {a50:7.0f}  {a95:7.0f}  {max(alone) * 1000:6.0f}")
    print(f"  beside heavy clients      {b50:7.0f}  {b95:7.0f}  {max(beside) * 1000:6.0f}")
    print(f"  ratio (beside / alone)    {b50 / a50:7.2f}  {b95 / a95:7.2f}")
    h50, h95 = _percentiles(heavy_latency)
    print(f"heavy requests: {sum(codes.values())}, statuses {dict(codes)}; latency ms p50 {h50:.0f}  p95 {h95:.0f}")
    print(f"server RSS MB: start {rss_start:.0f}  end {rss_end:.0f}  peak {max(peak):.0f}  (end - start {rss_end - rss_start:+.0f})")
    if errors:
        print(f"ordinary errors {len(errors)}, first:", errors[:3])


if __name__ == "__main__":
    main()
