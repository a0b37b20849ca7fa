"""Feature-extraction throughput: pipeline vs the model's compute limit vs a plain loop.

    .venv/bin/python benchmarks/bench_features.py [--images 384] [--backbone efficientnet_lite0]

Three figures on the same synthetic images (GSV-Cities size, 640×480, sharded
at the default 400×300), in one process, same batch size:

* pipeline  — ``extract_features``: image shards → feature shards on disk;
* bare      — the backbone alone on pre-made, normalised tensors (compute limit);
* reference — what a first notebook does: PIL decode at full size, torchvision
  ``Resize``/``ToTensor``/``Normalize`` per image, contiguous NCHW batches,
  ``torch.no_grad``, no tuning.

Targets: pipeline/bare ≥ 0.85, pipeline/reference ≥ 1.5.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision import transforms

from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, shard_paths, write_shards
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.features.backbones import build_backbone
from worldnet.features.extract import extract_features
from worldnet.parallel import default_workers


def make_shards(root: Path, n: int) -> Path:
    """Render ``n`` synthetic 640×480 images and shard them at 400×300."""
    generate(SynthConfig(out=root / "world", per_city=n // 23 + 1, size=(640, 480), eurocentric=False), progress=False)
    manifest, _ = ingest("gsv_cities", root / "world")
    manifest = manifest.head(n).with_columns(seen=pl.lit("train"), unseen=pl.lit("train"))
    write_shards(manifest, root / "shards", ShardSpec(shard_size=128), progress=False)
    return root / "shards"


def reference_loop(model: torch.nn.Module, shards: list[Path], input_size: tuple[int, int], mean, std, batch_size: int) -> int:  # type: ignore[no-untyped-def]
    """A plain PyTorch loop with no tuning (the notebook baseline)."""
    tf = transforms.Compose([transforms.Resize(input_size), transforms.ToTensor(), transforms.Normalize(mean, std)])
    n = 0
    batch: list[torch.Tensor] = []
    with torch.no_grad():
        for s in shards:
            for data in pq.read_table(s, columns=["jpeg"]).column("jpeg").to_pylist():
                batch.append(tf(Image.open(io.BytesIO(data)).convert("RGB")))
                if len(batch) == batch_size:
                    model(torch.stack(batch))
                    n += len(batch)
                    batch = []
        if batch:
            model(torch.stack(batch))
            n += len(batch)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=384, help="images to embed (default 384)")
    ap.add_argument("--backbone", default="efficientnet_lite0", help="registered backbone (default efficientnet_lite0)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16, the pipeline's)")
    args = ap.parse_args()
    torch.set_num_threads(default_workers())
    tmp = Path(tempfile.mkdtemp(prefix="bench_features_"))
    try:
        shards_dir = make_shards(tmp, args.images)
        shards = shard_paths(shards_dir)
        backbone = build_backbone(args.backbone)
        spec = backbone.spec
        bs = args.batch_size

        # The reference runs first: the pipeline tunes process-wide settings
        # (the allocator) that the plain loop must not inherit.
        plain = build_backbone(args.backbone).eval()  # fresh, contiguous weights
        reference_loop(plain, shards[:1], spec.input_size, spec.mean, spec.std, bs)  # warm-up
        t0 = time.perf_counter()
        n = reference_loop(plain, shards, spec.input_size, spec.mean, spec.std, bs)
        reference = n / (time.perf_counter() - t0)

        # warm up every path once (allocators, OpenMP pools, page cache)
        extract_features(backbone, shards_dir, tmp / "warm", batch_size=bs, progress=False, stop_after=1)

        t0 = time.perf_counter()
        res = extract_features(backbone, shards_dir, tmp / "features", batch_size=bs, progress=False)
        pipeline = res.images / (time.perf_counter() - t0)

        model = backbone.eval().to(memory_format=torch.channels_last)
        x = torch.randn(bs, 3, *spec.input_size).contiguous(memory_format=torch.channels_last)
        n_batches = max(3, res.images // bs)
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            for _ in range(n_batches):
                model(x)
            bare = n_batches * bs / (time.perf_counter() - t0)

        print(
            f"backbone: {spec.name}, input {spec.input_size[0]}x{spec.input_size[1]}, batch {bs}, "
            f"threads {torch.get_num_threads()}, images {res.images}"
        )
        print(f"pipeline  (shards -> feature shards): {pipeline:7.1f} img/s")
        print(f"bare model (pre-made tensors)       : {bare:7.1f} img/s")
        print(f"plain PyTorch reference loop        : {reference:7.1f} img/s")
        print(f"pipeline / bare      : {pipeline / bare:5.2f}  (target >= 0.85)")
        print(f"pipeline / reference : {pipeline / reference:5.2f}  (target >= 1.5)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
