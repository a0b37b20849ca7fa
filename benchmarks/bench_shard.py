"""Shard stage vs a naive one-process PIL loop, on the same synthetic images.

    .venv/bin/python benchmarks/bench_shard.py [--images 512] [--size 640x480]

Synthetic images are rendered at GSV-Cities' own size (640×480) by default and
resized to the default shard size (400×300). The naive loop is what a notebook
does: ``Image.open → resize → save`` per file, in one process. Both produce
re-encoded JPEGs of the same size and quality.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
from PIL import Image

from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, write_shards
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.parallel import default_workers


def naive_loop(paths: list[str], out: Path, spec: ShardSpec) -> None:
    """The baseline: one file at a time, one process, default resampling."""
    out.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        img = Image.open(p).convert("RGB").resize((spec.width, spec.height))
        img.save(out / f"{i:06d}.jpg", quality=spec.quality)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024, help="about how many images (default 1024; at least 500)")
    ap.add_argument("--size", default="640x480", help="source image size WxH (default 640x480, as GSV-Cities)")
    ap.add_argument("--repeats", type=int, default=2, help="take the best of this many timings (default 2)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    spec = ShardSpec()
    tmp = Path(tempfile.mkdtemp(prefix="bench_shard_"))
    try:
        generate(SynthConfig(out=tmp / "world", per_city=max(1, args.images // 23 + 1), size=(w, h), eurocentric=False), progress=False)
        manifest, _ = ingest("gsv_cities", tmp / "world")
        manifest = manifest.head(max(args.images, 500)).with_columns(seen=pl.lit("train"), unseen=pl.lit("train"))
        paths = manifest["path"].to_list()
        n = len(paths)
        # warm the page cache so both sides read from memory
        for p in paths:
            Path(p).read_bytes()

        def best(fn) -> float:  # type: ignore[no-untyped-def]
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                fn(r)
                times.append(time.perf_counter() - t0)
            return min(times)

        t_naive = best(lambda r: naive_loop(paths, tmp / f"naive{r}", spec))
        t_stage = best(lambda r: write_shards(manifest, tmp / f"shards{r}", spec, progress=False))
        naive, stage = n / t_naive, n / t_stage
        print(f"images: {n} at {w}x{h} -> {spec.width}x{spec.height}, q{spec.quality}; cores: {default_workers()}")
        print(f"naive PIL loop (1 process): {naive:8.1f} img/s  ({t_naive:.2f} s)")
        print(f"shard stage               : {stage:8.1f} img/s  ({t_stage:.2f} s)")
        print(f"ratio stage/naive         : {stage / naive:8.2f}x  (target >= 2x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
