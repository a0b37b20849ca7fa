"""An ensemble's members trained side by side (one batched product a step) against one after another.

    .venv/bin/python benchmarks/bench_members.py [--rows 2000 4000] [--members 5] [--epochs 20] [--rounds 3]

The centroid classifier is five one-hidden-layer MLPs over 1,280-d features
(EfficientNet-Lite0's width); the pipeline trains it once per protocol and once
per crossfit fold, about fifteen times in a ``worldnet run``. Generated features
and soft targets over 47 clusters (the k-means clusters of ``street_world``), a
fold classifier's budget (no validation, ``--epochs`` epochs). Three ways,
interleaved round by round (this machine is shared: a ratio measured side by
side is a fact, an absolute time is not):

* ``former, 1 thread``  — the former way: each member a ``CentroidClassifier``
  trained by itself with ``nn.Dropout``, one after another;
* ``alone, 1 thread``   — each member trained by itself with the side-by-side
  code (every member is the same MLP either way, a test checks it);
* ``side by side, 1 thread`` and ``side by side, all threads`` — all members in
  one batched product per step (with AdamW's fused update, as ``alone``).

The pipeline trains on one thread at these sizes: with a second process keeping
both cores busy, two threads took 1.8x as long as the former way
(``worldnet.models.linear.training_threads``).

Printed: median seconds per ensemble, and the ratios to ``former``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from worldnet.models.linear import torch_threads
from worldnet.models.worldnet_model import CentroidClassifier, TrainConfig, _train_members, mlp_batch_size


def former(X: torch.Tensor, soft: torch.Tensor, k: int, cfg: TrainConfig, seed: int) -> CentroidClassifier:
    """One member as the classifier trained it before the members went side by side."""
    torch.manual_seed(seed)
    model = CentroidClassifier(X.shape[1], k, cfg.hidden, cfg.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg.max_epochs):
        for idx in torch.randperm(len(X), generator=g).split(mlp_batch_size(len(X), cfg)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), soft[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model.eval()


def _ways(
    X: torch.Tensor, soft: torch.Tensor, k: int, cfg: TrainConfig, seeds: list[int], cores: int
) -> dict[str, tuple[int, Callable[[], object]]]:
    """Each way to train the ensemble: (threads, the call)."""
    return {
        "former, 1 thread": (1, lambda: [former(X, soft, k, cfg, s) for s in seeds]),
        "alone, 1 thread": (1, lambda: [_train_members(X, soft, None, None, k, cfg, [s]) for s in seeds]),
        "side by side, 1 thread": (1, lambda: _train_members(X, soft, None, None, k, cfg, seeds)),
        f"side by side, {cores} threads": (cores, lambda: _train_members(X, soft, None, None, k, cfg, seeds)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[2000, 4000])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=47)
    args = ap.parse_args()
    cores = torch.get_num_threads()
    cfg = TrainConfig(max_epochs=args.epochs, members=args.members)
    seeds = [cfg.seed + 7919 * i for i in range(args.members)]
    print(f"{args.members} members, {args.dim}-d features, {args.k} clusters, {args.epochs} epochs, {cores} cores")
    for n in args.rows:
        rng = np.random.default_rng(0)
        X = torch.from_numpy(rng.normal(size=(n, args.dim)).astype(np.float32))
        soft = torch.softmax(torch.from_numpy(rng.normal(size=(n, args.k)).astype(np.float32)), -1)
        ways = _ways(X, soft, args.k, cfg, seeds, cores)
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for name, (threads, fn) in ways.items():
                with torch_threads(threads):
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        med = {w: statistics.median(v) for w, v in times.items()}
        base = med["former, 1 thread"]
        print(f"\n-- {n:,} rows")
        for w, v in med.items():
            print(f"  {w:26s} {v:7.2f} s   {base / v:5.2f}x")


if __name__ == "__main__":
    main()
