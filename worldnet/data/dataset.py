"""Torch datasets that stream images out of Parquet shards.

Only one record batch per worker is in memory at a time; with several
DataLoader workers, shards are dealt out round-robin so no image is read twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from upath import UPath

from worldnet.data.shards import iter_shard_rows


def _my_shards(shards: list[UPath]) -> list[tuple[int, UPath]]:
    info = get_worker_info()
    indexed = list(enumerate(shards))
    return indexed if info is None else indexed[info.id :: info.num_workers]


@dataclass
class ShardBatch:
    """Decoded images of one shard (a batch never spans two shards)."""

    shard: int
    ids: list[str]
    images: torch.Tensor  # uint8 (N, H, W, 3)


class ShardBatchDataset(IterableDataset[ShardBatch]):
    """Yields ready-made :class:`ShardBatch` es; use with ``DataLoader(batch_size=None)``.

    Batching inside the dataset keeps every batch within one shard, so the
    consumer can write one output file per input shard as soon as it is done,
    and a single DataLoader serves all shards (no worker start-up per shard).
    """

    def __init__(self, shards: list[UPath], decode: Callable[[bytes], np.ndarray], batch_size: int = 16, decode_threads: int = 1):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.shards = list(shards)
        self.decode = decode
        self.batch_size = batch_size
        self.decode_threads = decode_threads

    def __iter__(self) -> Iterator[ShardBatch]:
        pool = ThreadPoolExecutor(self.decode_threads) if self.decode_threads > 1 else None
        try:
            for k, path in _my_shards(self.shards):
                for batch in iter_shard_rows(path, ["image_id", "jpeg"], self.batch_size):
                    jpegs = batch["jpeg"]
                    arrays = list(pool.map(self.decode, jpegs)) if pool else [self.decode(cast(bytes, d)) for d in jpegs]
                    yield ShardBatch(k, [str(i) for i in batch["image_id"]], torch.from_numpy(np.stack(arrays)))
        finally:
            if pool:
                pool.shutdown()


__all__ = ["ShardBatch", "ShardBatchDataset"]
