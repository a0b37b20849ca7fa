"""Scale-out: the extract_features stage on 1 and 2 Dask workers, and what 560k images would take.

    .venv/bin/python benchmarks/bench_scale.py [--images 512] [--shard-size 64] [--backbone efficientnet_lite0]

Runs the real pipeline stage (Prefect flow, one ``extract-one`` task per image
shard, MLflow logging) on a ``distributed.LocalCluster`` of single-threaded
worker processes (``--dask-address`` style: the cluster outlives the flow),
after the upstream stages have run once with the default runner. Each stage
runs twice: *cold*, on fresh workers (each imports torch and builds the
backbone once), then *warm*, on the same workers. Timings are the stage's wall
time; the default thread runner (one process, every core) is there to compare.

The estimate for the full GSV-Cities (560k images) uses the warm cost per
image on one single-core worker, divided by N workers at the measured 2-worker
efficiency, plus the cold start once; it assumes one core per worker as here
and storage that keeps up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from flows.env import apply_local_defaults

apply_local_defaults()

from flows.pipeline import run_pipeline  # noqa: E402
from flows.runners import make_task_runner  # noqa: E402
from tasks.config import PipelineConfig  # noqa: E402
from worldnet.data.synthetic import SynthConfig, generate  # noqa: E402

GSV_CITIES_IMAGES = 560_000


def _extract(cfg: PipelineConfig, runner: object) -> tuple[float, int]:
    shutil.rmtree(cfg.catalog().path("feature_shards"), ignore_errors=True)
    out = run_pipeline(cfg, only="extract_features", task_runner=runner)  # forced: never skipped or restored from MLflow
    return out["timings"]["extract_features"], int(out["extract_features"]["images"])


def _on_cluster(cfg: PipelineConfig, workers: int) -> tuple[float, float, int]:
    """(cold, warm) stage seconds on a LocalCluster of ``workers`` single-threaded processes."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        runner = make_task_runner("dask", dask_address=cluster.scheduler_address)
        cold, n = _extract(cfg, runner)
        warm, n = _extract(cfg, runner)
    return cold, warm, n


def _hms(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h {rem // 60:02d}m" if h else f"{rem // 60}m {rem % 60:02d}s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512, help="synthetic images (GSV-Cities size 640×480)")
    ap.add_argument("--shard-size", type=int, default=64, help="images per shard = per task")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="worldnet-bench-scale-"))
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        generate(
            SynthConfig(out=tmp / "world", per_city=args.images // 23 + 1, size=(640, 480), eurocentric=False),
            progress=False,
        )
        cfg = PipelineConfig(
            data_root=str(tmp / "world"),
            root=str(tmp / "root"),
            backbone=args.backbone,
            shard_size=args.shard_size,
            debias_cap=10**6,
            debias_max_share=1.0,
            progress=False,
        )
        run_pipeline(cfg, stages=["ingest", "debias", "split", "shard"])
        _extract(cfg, make_task_runner("threads"))  # builds the model in this process
        t_threads, n = _extract(cfg, make_task_runner("threads"))
        runs = {w: _on_cluster(cfg, w) for w in (1, 2)}
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)

    shards = -(-n // args.shard_size)
    print(f"\nextract_features stage, {args.backbone}, {n} images in {shards} shards of {args.shard_size} ({os.cpu_count()} cores here)")
    print(f"{'runner':<36} {'cold s':>7} {'warm s':>7} {'warm img/s':>11}")
    print(f"{'threads (1 process, every core)':<36} {'':>7} {t_threads:>7.1f} {n / t_threads:>11.1f}")
    for w, (cold, warm, _) in runs.items():
        print(f"{f'dask, {w} worker(s) x 1 thread':<36} {cold:>7.1f} {warm:>7.1f} {n / warm:>11.1f}")
    ratio = runs[1][1] / runs[2][1]
    efficiency = ratio / 2
    print(f"\nscaling 1 -> 2 Dask workers (warm): {ratio:.2f}x (efficiency {efficiency:.0%})")
    per_image = runs[1][1] / n  # worker-seconds per image on one core
    start = max(0.0, runs[2][0] - runs[2][1])  # one-off: worker imports + model build
    print(f"measured: {per_image * 1000:.1f} ms per image per single-core worker; cold start {start:.0f} s")
    print(f"\nestimate for all {GSV_CITIES_IMAGES:,} GSV-Cities images (one core per worker, {efficiency:.0%} efficiency beyond one):")
    print(f"{'workers':>8} {'wall time':>12}")
    for workers in (1, 2, 8, 32, 128):
        eff = 1.0 if workers == 1 else efficiency
        print(f"{workers:>8} {_hms(start + GSV_CITIES_IMAGES * per_image / (workers * eff)):>12}")


if __name__ == "__main__":
    main()
