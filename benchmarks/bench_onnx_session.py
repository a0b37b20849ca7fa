"""Photos left out of a full batch: one dynamic ONNX Runtime session beside one fixed to a single photo.

    .venv/bin/python benchmarks/bench_onnx_session.py [--frame 600x300] [--no-flip] [--sizes 1,2,4,8,15] [--runs 15]

An answer runs one photo (or the few views of one place), and extraction ends
with a partial batch. ONNX Runtime plans every shape ahead only when the batch
dimension is fixed (``onnx_session(batch=...)``), so there are two ways to run
``n`` photos that do not fill a batch of :data:`~worldnet.features.onnx_graph.FIXED_BATCH`:
all ``n`` through a session whose batch dimension is free, or one at a time
through a session fixed to one photo (what :class:`~worldnet.features.onnx_graph.OnnxBackbone`
does). This prints milliseconds per photo for each, the two **alternating** in
one run (both sessions with the answer path's settings: every core, no
spinning), median of ``--runs``, and checks that they give the same features.

The graph is EfficientNet-Lite0's answer-path graph at ``--frame`` (Street
View's 2:1 with its mirror by default), on ``street_world`` photos when
``../shared/data`` is present, else on seeded random pixels (the time does
not depend on the pixels).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from worldnet.features.engine import build_engine
from worldnet.features.names import View
from worldnet.features.onnx_graph import OnnxBackbone, onnx_session

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "street_world" / "images"


def _photos(engine: OnnxBackbone, n: int) -> np.ndarray:
    """``n`` photos decoded for the graph: real ones where the shared data is, else seeded random pixels."""
    h, w = engine.spec.input_size
    files = sorted(PHOTOS.rglob("*.jpg"))[:n] if PHOTOS.is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    from PIL import Image

    from worldnet.features.preprocess import to_array

    return np.stack([to_array(Image.open(f).convert("RGB"), engine.spec) for f in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame", default="600x300", help="the shard frame, WIDTHxHEIGHT (Street View's 2:1 by default)")
    ap.add_argument("--no-flip", action="store_true", help="one look, without the mirror image")
    ap.add_argument("--sizes", default="1,2,4,8,15", help="how many photos are left over, comma-separated")
    ap.add_argument("--runs", type=int, default=15, help="timed runs of each size and session (alternating)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.frame.lower().split("x"))
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        view = View(height=h, flip=not args.no_flip)
        engine = build_engine("efficientnet_lite0", frame=(w, h), view=view, engine="onnx", graphs_dir=Path(tmp))
        if not isinstance(engine, OnnxBackbone):
            raise SystemExit("the ONNX export failed on this machine; nothing to compare")
        graph = Path(engine.path).read_bytes()
    dynamic, single = onnx_session(graph, spin=False), onnx_session(graph, batch=1, spin=False)
    x = _photos(engine, max(sizes))

    def run_dynamic(n: int) -> np.ndarray:
        return np.asarray(dynamic.run(["features"], {"images": x[:n]})[0])

    def run_single(n: int) -> np.ndarray:
        return np.concatenate([single.run(["features"], {"images": x[i : i + 1]})[0] for i in range(n)])

    drift = float(np.abs(run_dynamic(max(sizes)) - run_single(max(sizes))).max())
    print(f"{engine.path.rsplit('/', 1)[-1]}: features of the two ways differ by at most {drift:.2g}")
    print(f"\nms per photo, median of {args.runs} alternating runs")
    print("| photos | dynamic session | one at a time, fixed to 1 | dynamic / fixed |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        times: dict[str, list[float]] = {"dynamic": [], "single": []}
        for i in range(args.runs + 2):  # the first two of each are warm-up
            for name, fn in (("dynamic", run_dynamic), ("single", run_single)):
                t = time.perf_counter()
                fn(n)
                if i >= 2:
                    times[name].append((time.perf_counter() - t) / n)
        d, s = (1000 * statistics.median(times[k]) for k in ("dynamic", "single"))
        print(f"| {n} | {d:.1f} | {s:.1f} | {d / s:.2f} |")


if __name__ == "__main__":
    main()
