"""Feature-extraction throughput: the pipeline against both engines' bare compute and a plain loop.

    .venv/bin/python benchmarks/bench_features.py [--images 384] [--rounds 3] [--backbone efficientnet_lite0]

Four figures on the same synthetic images (GSV-Cities size, 640×480, sharded
at the default 400×300, seen as the pipeline sees them by default: 300 px
high, averaged with the mirror image), in one process, same batch size and
threads:

* pipeline  — ``extract_features`` on the default engine (ONNX Runtime on
  CPU): image shards → feature shards on disk, decoding included;
* onnxruntime bare / torch bare — each engine alone on one pre-made batch in
  the form it takes (uint8 NHWC for the ONNX graph, which normalises inside;
  a normalised channels-last tensor for torch), timed **batch by batch,
  alternating**, so that machine load hits both alike; medians of the
  per-batch times;
* reference — what a first notebook does: PIL decode at full size,
  torchvision ``Resize``/``ToTensor``/``Normalize`` per image, contiguous NCHW
  batches, ``torch.no_grad``, no tuning.

The pipeline runs ``--rounds`` times, each round followed by as many
alternating bare batches as it embedded, and the ratios compare the median
round with the median batch. Targets: pipeline / onnxruntime bare >= 0.85,
pipeline / torch bare >= 1.3.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision import transforms

from worldnet.data.ingest import ingest
from worldnet.data.shards import ShardSpec, shard_frame, shard_paths, write_shards
from worldnet.data.synthetic import SynthConfig, generate
from worldnet.features.backbones import build_backbone
from worldnet.features.engine import OnnxBackbone, build_engine
from worldnet.features.extract import extract_features
from worldnet.features.names import View
from worldnet.features.preprocess import normalise_batch
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
    ap.add_argument("--rounds", type=int, default=3, help="pipeline rounds, each followed by its bare batches (default 3)")
    ap.add_argument("--backbone", default="efficientnet_lite0", help="registered backbone (default efficientnet_lite0)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16, the pipeline's)")
    ap.add_argument("--input-height", type=int, default=None, help="pixels high the backbone sees (default: the pipeline's, 300)")
    ap.add_argument(
        "--no-flip",
        action="store_true",
        help="no mirror averaging (the pipeline averages where all photos drive on one side; twice the work)",
    )
    args = ap.parse_args()
    threads = default_workers()
    torch.set_num_threads(threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_features_"))
    try:
        shards_dir = make_shards(tmp, args.images)
        shards = shard_paths(shards_dir)
        frame = shard_frame(shards_dir)
        bs = args.batch_size

        # The reference runs first: the pipeline tunes process-wide settings
        # (the allocator) that the plain loop must not inherit.
        view = View(args.input_height, not args.no_flip)
        plain = build_backbone(args.backbone, frame=frame, view=view).eval()  # fresh, contiguous weights
        spec = plain.spec
        reference_loop(plain, shards[:1], spec.input_size, spec.mean, spec.std, bs)  # warm-up
        t0 = time.perf_counter()
        n = reference_loop(plain, shards, spec.input_size, spec.mean, spec.std, bs)
        reference = n / (time.perf_counter() - t0)

        pipeline_engine = build_engine(args.backbone, frame=frame, view=view, engine="auto", graphs_dir=tmp / "graphs", threads=threads)
        torch_model = build_backbone(args.backbone, frame=frame, view=view).eval().to(memory_format=torch.channels_last)
        ort_model = build_engine(args.backbone, frame=frame, view=view, engine="onnx", graphs_dir=tmp / "graphs", threads=threads)
        assert isinstance(ort_model, OnnxBackbone)
        u8 = torch.randint(0, 256, (bs, *spec.input_size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        x_cl = normalise_batch(u8, spec)  # torch's input: normalised, channels-last, made in advance
        x_np = u8.numpy()  # onnxruntime's input: uint8 NHWC as decoded (its graph normalises)

        # warm up every path once (allocators, thread pools, page cache)
        extract_features(pipeline_engine, shards_dir, tmp / "warm", batch_size=bs, progress=False, stop_after=1)
        with torch.inference_mode():
            torch_model(x_cl)
        ort_model(x_np)

        rounds: list[float] = []
        t_ort: list[float] = []
        t_torch: list[float] = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            res = extract_features(pipeline_engine, shards_dir, tmp / f"features-{r}", batch_size=bs, progress=False)
            rounds.append(res.images / (time.perf_counter() - t0))
            with torch.inference_mode():
                for _ in range(max(3, res.images // bs)):
                    t0 = time.perf_counter()
                    ort_model(x_np)
                    t_ort.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    torch_model(x_cl)
                    t_torch.append(time.perf_counter() - t0)
        pipeline = statistics.median(rounds)
        ort_bare = bs / statistics.median(t_ort)
        torch_bare = bs / statistics.median(t_torch)

        engine = "onnxruntime" if isinstance(pipeline_engine, OnnxBackbone) else "torch"
        print(
            f"backbone: {spec.name}, input {spec.input_size[0]}x{spec.input_size[1]}{' + mirror' if spec.flip else ''}, "
            f"batch {bs}, threads {threads}, "
            f"images {res.images}, pipeline engine {engine}, {args.rounds} rounds, {len(t_ort)} bare batches per engine"
        )
        per_round = ", ".join(f"{r:.1f}" for r in rounds)
        ms_ort, ms_torch = statistics.median(t_ort) * 1000, statistics.median(t_torch) * 1000
        print(f"pipeline (shards -> feature shards), median round : {pipeline:7.1f} img/s  (rounds: {per_round})")
        print(f"onnxruntime bare (pre-made batch), median batch   : {ort_bare:7.1f} img/s  ({ms_ort:.0f} ms/batch)")
        print(f"torch bare (channels_last), median batch          : {torch_bare:7.1f} img/s  ({ms_torch:.0f} ms/batch)")
        print(f"plain PyTorch reference loop                      : {reference:7.1f} img/s")
        print(f"onnxruntime bare / torch bare : {ort_bare / torch_bare:5.2f}")
        print(f"pipeline / onnxruntime bare : {pipeline / ort_bare:5.2f}  (target >= 0.85)")
        print(f"pipeline / torch bare : {pipeline / torch_bare:5.2f}  (target >= 1.3)")
        print(f"pipeline / reference : {pipeline / reference:5.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
