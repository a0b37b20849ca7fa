"""Model-stage training time at 2k, 20k and 200k rows, idle and with the cores busy.

    .venv/bin/python benchmarks/bench_train.py [--sizes 2000 20000 200000] [--busy-sizes 2000 20000]

Generated 1,280-d features (the width of EfficientNet-Lite0's) with weak cell
structure, like real Street View features: 40 cells of a US-West-sized box, a
photo's feature = a small cell signature + unit noise. 20% of the rows (whole
places) are the test set. Timed per stage, as the pipeline runs them:

* classifier — city centroids, then the linear centroid classifier;
* heads      — the in-sample and the crossfit interpolation heads;
* baselines  — mean, guess, random, direct regression, both nn classifiers;
* evaluate   — scoring every model (land snapping included).

Each size runs idle, then (for ``--busy-sizes``) with a second process keeping
both cores busy with matrix products, back to back in this one run, so the
ratio busy / idle is measured under the same conditions. Targets: time grows no
worse than linearly with rows, 200k rows train in under 10 minutes on 2 cores,
and busy ≤ 2.5 × idle.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time

import numpy as np
import polars as pl

from worldnet.evaluate import evaluate_step
from worldnet.models.worldnet_model import TrainConfig
from worldnet.protocol import (
    cluster_step,
    protocol_data,
    train_baselines_step,
    train_classifier_step,
    train_interpolation_step,
)

STAGES = ("classifier", "heads", "baselines", "evaluate")
#: The competing load; it stops by itself when the benchmark that started it is gone (even if that was killed).
BUSY_LOOP = (
    "import os\nimport numpy as np\nparent = os.getppid()\na = np.random.rand(1500, 1500)\nwhile os.getppid() == parent:\n    a @ a\n"
)


def make_features(n: int, dim: int = 1280, cells: int = 40, seed: int = 0) -> tuple[np.ndarray, pl.DataFrame]:
    """``n`` rows of weakly informative features and their labels (3 photos per place, as in GSV)."""
    rng = np.random.default_rng(seed)
    centres = np.c_[rng.uniform(33, 48, cells), rng.uniform(-124, -114, cells)]
    signature = rng.normal(size=(cells, dim)).astype(np.float32) * 0.25
    places = math.ceil(n / 3)
    place_cell = rng.integers(0, cells, places)
    place_ll = centres[place_cell] + rng.normal(0, 0.4, (places, 2))
    row_place = np.repeat(np.arange(places), 3)[:n]
    cell = place_cell[row_place]
    X = signature[cell] + rng.standard_normal((n, dim), dtype=np.float32)
    role = rng.choice(np.array(["train", "val", "test"]), places, p=[0.7, 0.1, 0.2])[row_place]
    labels = pl.DataFrame(
        {
            "image_id": [f"p{p}-{i}" for i, p in enumerate(row_place)],
            "city": [f"C{c:02d}" for c in cell],
            "lat": place_ll[row_place, 0],
            "lon": place_ll[row_place, 1],
            "continent": "North America",
            "seen": role,
        }
    )
    return X, labels


def time_stages(X: np.ndarray, labels: pl.DataFrame, classifier: str) -> dict[str, float]:
    """Seconds per model stage on the ``seen`` protocol of this data."""
    out: dict[str, float] = {}
    cfg = TrainConfig(seed=0, classifier=classifier)
    t = time.perf_counter()
    data = protocol_data(X, labels, "seen")
    centroids = cluster_step(data, "city")
    fit = train_classifier_step(data, centroids, "city", cfg)
    out["classifier"] = time.perf_counter() - t
    t = time.perf_counter()
    heads = {
        "worldNET": train_interpolation_step(data, centroids, fit, "crossfit", "city", cfg),
        "worldNET (in-sample)": train_interpolation_step(data, centroids, fit, "in_sample", "city", cfg),
    }
    out["heads"] = time.perf_counter() - t
    t = time.perf_counter()
    baselines = train_baselines_step(data)
    out["baselines"] = time.perf_counter() - t
    t = time.perf_counter()
    result = evaluate_step(data, heads, baselines, centroids)
    out["evaluate"] = time.perf_counter() - t
    km = dict(zip(result.metrics["model"], result.metrics["mean_km"], strict=True))
    print(f"    mean km: worldNET {km['worldNET']:.0f}, nn {km['nn classifier']:.0f}, mean model {km['mean model']:.0f}", flush=True)
    return out


def busy_process() -> subprocess.Popen[bytes]:
    """A second process keeping both cores busy (two BLAS threads of matrix products)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env)
    time.sleep(2)  # let it reach full load
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    ap.add_argument("--busy-sizes", type=int, nargs="*", default=[2000, 20000])
    ap.add_argument("--classifier", default=TrainConfig.classifier, help="mlp (the default) or linear")
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    for n in args.sizes:
        X, labels = make_features(n)
        for condition in ("idle", "busy") if n in args.busy_sizes else ("idle",):
            print(f"{n:,} rows, {condition} ...", flush=True)
            proc = busy_process() if condition == "busy" else None
            try:
                secs = time_stages(X, labels, args.classifier)
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
            rows.append({"rows": n, "condition": condition, **secs, "total": sum(secs.values())})
            print("    " + ", ".join(f"{k} {v:.1f}s" for k, v in secs.items()), flush=True)
        del X, labels
    table = pl.DataFrame(rows)
    print(f"\nseconds per stage (classifier: {args.classifier})")
    print(f"{'rows':>8} {'condition':>9} " + " ".join(f"{s:>10}" for s in (*STAGES, "total")))
    for r in rows:
        print(f"{r['rows']:>8,} {r['condition']:>9} " + " ".join(f"{float(r[s]):>10.1f}" for s in (*STAGES, "total")))  # type: ignore[arg-type]
    idle = table.filter(pl.col("condition") == "idle").sort("rows")
    print("\ngrowth exponent between sizes (1.0 = linear; time ~ rows^e)")
    sizes = list(idle.iter_rows(named=True))
    for a, b in zip(sizes, sizes[1:], strict=False):
        ratio = b["rows"] / a["rows"]
        exps = {s: math.log(max(b[s], 1e-3) / max(a[s], 1e-3)) / math.log(ratio) for s in (*STAGES, "total")}
        print(f"  {a['rows']:,} -> {b['rows']:,}: " + ", ".join(f"{s} {e:.2f}" for s, e in exps.items()))
    for n in args.busy_sizes:
        sub = table.filter(pl.col("rows") == n)
        if sub.height == 2:
            i, b = (sub.filter(pl.col("condition") == c)["total"][0] for c in ("idle", "busy"))
            print(f"busy / idle at {n:,} rows: {b / i:.2f} (target <= 2.5)")
    big = idle.filter(pl.col("rows") == idle["rows"].max()).row(0, named=True)
    print(f"{big['rows']:,} rows idle: {big['total'] / 60:.1f} min in all (target < 10 min)")


if __name__ == "__main__":
    main()
