# ruff: noqa: B023
"""What fine-tuning costs: cached activations against recomputing the frozen stages, and against full backprop.

    .venv/bin/python benchmarks/bench_finetune.py [--backbone efficientnet_lite0] [--height 300] [--width 400]
        [--stages 1 2] [--rounds 5] [--photos 1707 560000] [--device cpu|cuda]

One training step on a batch of 32 photos at the Street View view, three ways,
interleaved round by round (this machine is shared: a ratio measured side by
side is a fact, an absolute time is not):

* ``cached``   — the ``finetune`` stage's way: the trained stages and ``conv_head``
  forward and backward on cached front activations (float16, as stored), in
  channels-last memory;
* ``cached:nchw`` — the same in PyTorch's default (NCHW) memory layout;
* ``recompute``— the same trained stages, the frozen front recomputed for
  every batch (no gradient through it): what an epoch costs without the cache;
* ``full``     — backprop through the whole backbone, every stage trained.

It also times building the cache, per photo, with the front in ONNX Runtime
and in PyTorch (also interleaved). Printed: median ms per photo, the ratios,
and seconds per epoch (and for the whole stage: the cache once plus the
epochs) extrapolated to ``--photos``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn

from worldnet.features.backbones import build_backbone
from worldnet.features.finetune import FinetuneConfig, _front_runner, split_backbone
from worldnet.features.names import View
from worldnet.features.preprocess import normalise_batch


def _step(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--height", type=int, default=300)
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--photos", type=int, nargs="+", default=[1707, 5265, 560_000])
    ap.add_argument("--epochs", type=int, default=FinetuneConfig().epochs)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    view = View(args.height, False)
    k = 40
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.batch, args.height, args.width, 3), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, k, args.batch)).to(dev)
    print(f"{args.backbone} at {args.height}x{args.width}, batch {args.batch}, {args.device}, {torch.get_num_threads()} threads")
    for stages in args.stages:
        bb = build_backbone(args.backbone, frame=(args.width, args.height), view=view).to(dev)
        front, tail = split_backbone(bb, stages)
        head = nn.Linear(bb.spec.dim, k).to(dev)
        x = normalise_batch(images.to(dev), bb.spec, channels_last=False)
        with torch.inference_mode():
            cached = front(x).half()
        cached = cached.clone()
        tail_model = nn.Sequential(tail, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
        opt_tail = torch.optim.AdamW(list(tail.parameters()) + list(head.parameters()), lr=1e-5)
        tail_cl = copy.deepcopy(tail_model).to(memory_format=torch.channels_last)
        opt_cl = torch.optim.AdamW(tail_cl.parameters(), lr=1e-5)
        full_model = nn.Sequential(front, tail, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
        opt_full = torch.optim.AdamW(full_model.parameters(), lr=1e-5)

        def cached_step() -> None:
            _step(tail_cl, [], cached.float().contiguous(memory_format=torch.channels_last), y, opt_cl)

        def nchw_step() -> None:
            _step(tail_model, [], cached.float(), y, opt_tail)

        def recompute_step() -> None:
            with torch.no_grad():
                a = front(x)
            _step(tail_model, [], a, y, opt_tail)

        def full_step() -> None:
            _step(full_model, [], x, y, opt_full)

        runners = {"onnx": _front_runner(front, bb, "onnx", torch.get_num_threads())} if dev.type == "cpu" else {}
        runners["torch"] = _front_runner(front, bb, "torch", torch.get_num_threads())
        steps = {"cached": cached_step, "cached:nchw": nchw_step, "recompute": recompute_step, "full": full_step}
        times: dict[str, list[float]] = {n: [] for n in [*steps, *(f"cache:{e}" for e in runners)]}
        for fn in [*steps.values()]:  # warm-up
            fn()
        for r in runners.values():
            r(images, False)
        for _ in range(args.rounds):
            for name, fn in steps.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - t) / args.batch)
            for e, run in runners.items():
                t = time.perf_counter()
                run(images, False)
                times[f"cache:{e}"].append((time.perf_counter() - t) / args.batch)
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"\n-- {stages} trained stage(s) + conv_head; front activation {tuple(cached.shape[1:])} float16")
        for n, v in med.items():
            print(f"  {n:14s} {v * 1000:8.1f} ms/photo")
        print(f"  recompute / cached: {med['recompute'] / med['cached']:.2f}x   full / cached: {med['full'] / med['cached']:.2f}x")
        print(f"  cached, NCHW / channels-last: {med['cached:nchw'] / med['cached']:.2f}x")
        if "cache:onnx" in med:
            print(f"  cache build torch / onnx: {med['cache:torch'] / med['cache:onnx']:.2f}x")
        build = min(v for n, v in med.items() if n.startswith("cache:"))
        for n in args.photos:
            cached_total = n * build + args.epochs * n * med["cached"]
            print(
                f"  {n:>7,} photos: epoch {n * med['cached']:,.0f} s cached, {n * med['recompute']:,.0f} s recomputed, "
                f"{n * med['full']:,.0f} s full; stage with {args.epochs} epochs: {cached_total / 60:,.1f} min cached "
                f"vs {args.epochs * n * med['full'] / 60:,.1f} min full"
            )


if __name__ == "__main__":
    main()
