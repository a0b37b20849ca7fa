"""A torch dataset that streams images out of Parquet shards.

Only one record batch per worker is in memory at a time; with several
DataLoader workers, shards are dealt out round-robin so no image is read twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path


import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from worldnet.data.shards import iter_shard_rows


class ShardImageDataset(IterableDataset[tuple[str, np.ndarray]]):
    """Yields ``(image_id, uint8 HWC array)`` for every image in the given shards.

    Args:
        shards: Shard files, in order.
        decode: Turns JPEG bytes into an array (e.g. decode + resize for a backbone).
        batch_size: Rows read from Parquet at a time.
    """

    def __init__(self, shards: list[Path], decode: Callable[[bytes], np.ndarray], batch_size: int = 32):
        self.shards = list(shards)
        self.decode = decode
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        info = get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for path in mine:
            for batch in iter_shard_rows(path, ["image_id", "jpeg"], self.batch_size):
                for image_id, data in zip(batch["image_id"], batch["jpeg"], strict=True):
                    yield str(image_id), self.decode(data)


def collate_uint8(items: list[tuple[str, np.ndarray]]) -> tuple[list[str], torch.Tensor]:
    """Stack decoded images into one uint8 (N, H, W, 3) tensor."""
    ids = [i for i, _ in items]
    return ids, torch.from_numpy(np.stack([a for _, a in items]))


__all__ = ["ShardImageDataset", "collate_uint8"]
