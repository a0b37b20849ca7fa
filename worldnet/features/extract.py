"""Feature extraction: image shards → feature shards.

For each image shard ``shard-k.parquet`` we write ``feat-k.npy`` (float16, one
row per image) and ``feat-k.parquet`` (image_id and labels, same order), both
atomically, and the ``.parquet`` last: its presence with a matching row count
marks the pair complete, so a killed run resumes where it stopped and the
result equals an uninterrupted run.

Speed on CPU: batched, ``torch.inference_mode``, threads = cores, channels-last
memory, glibc told to reuse activation buffers (see ``runtime``), and JPEG
decoding (draft mode) on every core between batches on CPU, and overlapped
with the model in DataLoader worker processes on GPU (see
``default_loader_workers`` for why).
``benchmarks/bench_features.py`` measures it against the model alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from upath import UPath

from worldnet.data.dataset import ShardBatch, ShardBatchDataset
from worldnet.data.shards import shard_paths
from worldnet.features.backbones import Backbone, BackboneSpec, resolve_device, saved_view
from worldnet.features.engine import OnnxBackbone
from worldnet.features.names import View
from worldnet.features.preprocess import decode_for, normalise_batch
from worldnet.features.runtime import tune_cpu_allocator
from worldnet.io import write_text_atomic, write_with_atomic
from worldnet.parallel import default_workers
from worldnet.storage import as_path, load_npy, npy_rows, read_parquet, sorted_glob

LABEL_COLUMNS = ["image_id", "city", "lat", "lon", "continent", "seen", "unseen", "place_id"]


@dataclass
class ExtractResult:
    """What the extraction produced."""

    out_dir: UPath
    images: int
    written: int
    skipped: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _feature_pair(out_dir: UPath, shard: UPath) -> tuple[UPath, UPath]:
    stem = shard.stem.replace("shard-", "feat-")
    return out_dir / f"{stem}.npy", out_dir / f"{stem}.parquet"


def provenance(shard: UPath, spec: BackboneSpec, flat: bool = False, weights_id: str | None = None) -> dict[str, object]:
    """What a feature shard is made from: the image shard's checksum (from its sidecar) and the model's input.

    A feature shard counts as done only when its recorded provenance equals
    this, so features of a rewritten or re-framed image shard, or of another
    input size, are never reused. ``weights_id`` (a weights fingerprint, set for
    a backbone with user or fine-tuned weights) tells fine-tuned features from pretrained ones.
    """
    side = shard.with_suffix(".json")
    source = json.loads(side.read_text()).get("sha256") if side.is_file() else None
    prov: dict[str, object] = {
        "source_sha256": source,
        "backbone": spec.name,
        "input_size": list(spec.input_size),
        "flip": spec.flip,
        "flat": flat,
    }
    if weights_id is not None:
        prov["weights"] = weights_id
    return prov


def _is_done(npy: UPath, index: UPath, n_rows: int, prov: dict[str, object] | None = None) -> bool:
    """Whether a feature shard is complete, made from this source and view, and byte for byte what was written.

    The sidecar keeps the SHA-256 of the ``.npy`` and the ``.parquet`` as
    written; a file changed since (a flipped byte still parses) is redone,
    never trained on. Reading both back costs about a millisecond a shard.
    """
    if not (npy.is_file() and index.is_file()):
        return False
    try:
        side = index.with_suffix(".json")
        if prov is not None:
            if not side.is_file():
                return False
            recorded = json.loads(side.read_text())
            content = recorded.pop("content", None)
            if recorded != prov or content != {"npy": _sha256(npy.read_bytes()), "index": _sha256(index.read_bytes())}:
                return False
        return read_parquet(index, columns=["image_id"]).height == n_rows and npy_rows(npy) == n_rows
    except Exception:  # noqa: BLE001 - an unreadable leftover is simply redone
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _select_shards(shards_dir: str | Path | UPath, only: list[str] | None) -> list[UPath]:
    """The complete image shards to embed: all of them, or the named ones (checked, not listed)."""
    if only is None:
        shards = shard_paths(shards_dir)
        if not shards:
            raise FileNotFoundError(f"no image shards under {shards_dir}: run the 'shard' stage first")
        return shards
    chosen = [as_path(shards_dir) / n for n in sorted(set(only))]
    absent = [p.name for p in chosen if not (p.is_file() and p.with_suffix(".json").is_file())]
    if absent:
        raise FileNotFoundError(f"image shards {', '.join(absent)} are not (complete) under {shards_dir}: rerun the 'shard' stage")
    return chosen


def pending_shards(
    shards_dir: str | Path | UPath,
    out_dir: str | Path | UPath,
    spec: BackboneSpec | None = None,
    flat: bool = False,
    weights_id: str | None = None,
) -> list[str]:
    """Names of the image shards whose feature shards are missing, incomplete, or made from something else.

    With ``spec``, a feature shard whose provenance (see :func:`provenance`) differs is pending too.
    """
    out = as_path(out_dir)
    pending = []
    for s in shard_paths(shards_dir):
        npy, idx = _feature_pair(out, s)
        prov = provenance(s, spec, flat, weights_id) if spec is not None else None
        if not _is_done(npy, idx, read_parquet(s, columns=["image_id"]).height, prov):
            pending.append(s.name)
    return pending


def remove_orphans(shards_dir: str | Path | UPath, out_dir: str | Path | UPath) -> list[str]:
    """Delete feature shards whose image shard is gone (a smaller dataset cut fewer shards); returns their names.

    Left in place they would be read back as part of the features.
    """
    live = {s.stem.replace("shard-", "feat-") for s in shard_paths(shards_dir)}
    removed = []
    for f in sorted_glob(out_dir, "feat-*"):
        if f.name.split(".")[0] not in live:
            f.unlink()
            removed.append(f.name)
    return removed


def default_loader_workers(device: torch.device) -> int:
    """Decode processes running ahead of the model: none on CPU, up to 8 on GPU.

    On CPU the model keeps every core busy, so anything decoding *beside* it
    steals from it and stalls its threads at their barriers. There, each batch
    is decoded between forward passes by a thread per core instead (PIL drops
    the GIL). Measured on 2 cores, pipeline/bare-model throughput: 0.93 that
    way, 0.84 with decoding overlapped in a thread, ~0.75 with one worker
    process. A GPU leaves the cores free, so there decoding overlaps.
    """
    return min(8, default_workers()) if device.type == "cuda" else 0


def extract_features(
    backbone: Backbone | OnnxBackbone,
    shards_dir: str | Path | UPath,
    out_dir: str | Path | UPath,
    *,
    only: list[str] | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    flat: bool = False,
    loader_workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    weights_id: str | None = None,
) -> ExtractResult:
    """Embed every image of every image shard into feature shards.

    One stream serves all pending shards (no start-up per shard); each feature shard is written (atomically) as soon as
    its last batch is embedded, so a killed run loses at most the shards in
    flight and a rerun redoes only those.

    Args:
        backbone: A registered backbone (see ``build_backbone``), or its ONNX
            Runtime engine (:func:`worldnet.features.engine.onnx_backbone`; CPU, pooled features).
        shards_dir: Folder of image shards from the shard stage.
        out_dir: Folder (or fsspec URL) for ``feat-k.npy`` + ``feat-k.parquet`` pairs.
        only: Embed just these image shards (file names); the pipeline maps
            one task per shard this way, on Dask workers if asked.
        threads: CPU threads for the model and for decoding (default: every
            core; a Dask worker passes its own share).
        batch_size: Images per forward pass (default: 16 on CPU, 128 on CUDA).
            16 is fastest on CPU here: bigger batches stop fitting in cache
            without adding parallelism. A GPU wants more: Lite0 on an H200 ran
            3,781 img/s at batch 16 and 14,607 at batch 64
            (``benchmarks/bench_cuda.py``).
        flat: Flattened conv features instead of pooled ones (the paper's kNN mode).
        loader_workers: Decode processes running ahead of the model (default:
            see ``default_loader_workers``; 0 decodes each batch in parallel
            threads between forward passes).
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        progress: Show a progress bar.
        stop_after: Embed at most this many shards, then stop (to test resuming).
        weights_id: The backbone's weights fingerprint when its weights are not the
            name's own (fine-tuned stages, a user's file): recorded in each shard's provenance.

    Returns:
        Counts and timing of what was embedded or skipped as already done.
    """
    t0 = time.perf_counter()
    out = as_path(out_dir)
    dev = resolve_device(device)
    n_threads = threads or default_workers()
    if dev.type == "cpu":
        tune_cpu_allocator()
        torch.set_num_threads(n_threads)
    workers = default_loader_workers(dev) if loader_workers is None else loader_workers
    batch_size = batch_size or (128 if dev.type == "cuda" else 16)
    embed = _embedder(backbone, dev, flat)
    use_amp = dev.type == "cuda"
    shards = _select_shards(shards_dir, only)
    todo: list[tuple[UPath, pl.DataFrame]] = []
    for s in shards:
        labels = read_parquet(s, columns=LABEL_COLUMNS)
        npy, idx = _feature_pair(out, s)
        if not _is_done(npy, idx, labels.height, provenance(s, backbone.spec, flat, weights_id)):
            todo.append((s, labels))
    skipped = len(shards) - len(todo)
    if stop_after is not None:
        todo = todo[:stop_after]
    bar = tqdm(total=sum(lab.height for _, lab in todo), desc=f"features {backbone.spec.name}", unit="img", disable=not progress)
    decode = partial(decode_for, backbone.spec)
    ds = ShardBatchDataset([s for s, _ in todo], decode, batch_size, decode_threads=1 if workers else n_threads)
    batches: Iterable[ShardBatch] = ds
    if workers > 0:
        batches = DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4, pin_memory=dev.type == "cuda")
    pending: dict[int, tuple[list[str], list[np.ndarray]]] = {}
    images = written = 0
    with torch.inference_mode(), torch.autocast(dev.type, enabled=use_amp):
        for batch in batches:
            feats = embed(batch.images).astype(np.float16)
            ids, chunks = pending.setdefault(batch.shard, ([], []))
            ids.extend(batch.ids)
            chunks.append(feats)
            bar.update(len(batch.ids))
            shard, labels = todo[batch.shard]
            if len(ids) == labels.height:
                _write_feature_shard(out, shard, labels, ids, chunks, provenance(shard, backbone.spec, flat, weights_id))
                del pending[batch.shard]
                images += len(ids)
                written += 1
    bar.close()
    if pending:
        names = ", ".join(todo[k][0].name for k in pending)
        raise RuntimeError(f"image shards {names} yielded fewer images than their index says; rerun the 'shard' stage")
    for shard, labels in todo:  # empty shards get no batch: write them so they count as done
        if labels.height == 0:
            _write_feature_shard(
                out, shard, labels, [], [np.zeros((0, backbone.spec.dim), np.float16)], provenance(shard, backbone.spec, flat, weights_id)
            )
    return ExtractResult(out, images, written, skipped, time.perf_counter() - t0)


def _embedder(backbone: Backbone | OnnxBackbone, dev: torch.device, flat: bool) -> Callable[[torch.Tensor], np.ndarray]:
    """uint8 NHWC batch → features on ``backbone``'s engine (ONNX graphs normalise inside; torch gets a normalised batch)."""
    if isinstance(backbone, OnnxBackbone):
        if flat or dev.type != "cpu":
            raise ValueError("the onnx engine gives pooled features on the CPU; use engine='torch' for flat features or CUDA")
        return lambda images: backbone(images.numpy())
    model = backbone.to(dev).eval().to(memory_format=torch.channels_last)
    return lambda images: model(normalise_batch(images.to(dev, non_blocking=True), model.spec), flat=flat).float().cpu().numpy()


def _write_feature_shard(
    out: UPath, shard: UPath, labels: pl.DataFrame, ids: list[str], chunks: list[np.ndarray], prov: dict[str, object]
) -> None:
    """The ``.npy``, then the provenance sidecar, then the ``.parquet`` index last: its presence marks the set complete."""
    if ids != labels["image_id"].to_list():
        raise RuntimeError(f"feature rows of {shard.name} are out of step with its image ids; rerun the stage")
    feats = np.concatenate(chunks)
    npy, idx = _feature_pair(out, shard)
    npy_bytes, idx_bytes = io.BytesIO(), io.BytesIO()
    np.save(npy_bytes, feats)
    labels.write_parquet(idx_bytes)
    content = {"npy": _sha256(npy_bytes.getvalue()), "index": _sha256(idx_bytes.getvalue())}
    write_with_atomic(npy, lambda tmp: tmp.write_bytes(npy_bytes.getvalue()))
    write_text_atomic(idx.with_suffix(".json"), json.dumps({**prov, "content": content}))
    write_with_atomic(idx, lambda tmp: tmp.write_bytes(idx_bytes.getvalue()))


FRAME_FILE = "frame.json"


def write_feature_frame(out_dir: str | Path | UPath, frame: tuple[int, int], spec: BackboneSpec) -> None:
    """Record beside the feature shards the image frame (w, h) and the view (input (h, w), mirror) they were made with.

    A model trained on these features must see new photos framed and viewed the same way.
    """
    record = {"frame": list(frame), "input_size": list(spec.input_size), "flip": spec.flip}
    write_text_atomic(as_path(out_dir) / FRAME_FILE, json.dumps(record))


def feature_frame(out_dir: str | Path | UPath) -> tuple[int, int] | None:
    """The frame :func:`write_feature_frame` recorded, or None for features made before it existed."""
    f = as_path(out_dir) / FRAME_FILE
    if not f.is_file():
        return None
    w, h = json.loads(f.read_text())["frame"]
    return int(w), int(h)


def feature_view(out_dir: str | Path | UPath, backbone: str) -> View:
    """The view :func:`write_feature_frame` recorded (features made before views existed saw the backbone's old height)."""
    f = as_path(out_dir) / FRAME_FILE
    record = json.loads(f.read_text()) if f.is_file() else {}
    return saved_view(backbone, {"height": record["input_size"][0], "flip": record["flip"]} if "flip" in record else None)


def load_features(out_dir: str | Path | UPath) -> tuple[np.ndarray, pl.DataFrame]:
    """All feature rows (float32) and their labels, aligned."""
    idx_files = sorted_glob(out_dir, "feat-*.parquet")
    if not idx_files:
        raise FileNotFoundError(f"no feature shards under {out_dir}: run the 'extract_features' stage first")
    X = np.concatenate([load_npy(p.with_suffix(".npy")).astype(np.float32) for p in idx_files])
    labels = pl.concat([read_parquet(p) for p in idx_files])
    if X.shape[0] != labels.height:
        raise RuntimeError(f"feature shards under {out_dir} are inconsistent ({X.shape[0]} rows vs {labels.height} labels)")
    return X, labels


__all__ = [
    "ExtractResult",
    "default_loader_workers",
    "extract_features",
    "feature_frame",
    "feature_view",
    "load_features",
    "pending_shards",
    "remove_orphans",
    "resolve_device",
]
