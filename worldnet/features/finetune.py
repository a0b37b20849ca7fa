"""Fine-tuning the backbone's last stages for place, affordably on CPU.

Frozen ImageNet features stop short on real street photos (``docs/method.md``,
``docs/worldwide.md``): every strong geolocation system adapts its image
encoder to the task. Backpropagating through all of EfficientNet-Lite costs
most of its time in the early, high-resolution stages, which a small dataset
cannot move usefully anyway. So the early stages stay frozen and run **once**:
their output (the activation entering the first trained stage, float16) is
cached per image shard, and each epoch trains only the last stages
(``FinetuneConfig.stages``) and ``conv_head`` on those activations, with the
classifier's own objective: a linear layer over the clusters, haversine-smoothed
targets (:func:`worldnet.models.worldnet_model.classifier_targets`).

Augmentation works on the cached activations: a random crop of the feature map
(a crop of the photo, at the stride of the first trained stage) and, where every
photo drives on one side, the mirror image's activation (cached beside it).
Batch norms keep their ImageNet statistics (a few thousand photos estimate
them worse than ImageNet did).

Honest by construction: :func:`finetune_rows` trains only on photos that are
``train`` in every protocol of the run and stops on photos that are validation
in one and test in none; test photos are never read. The fine-tuned stages are
saved as a small state dict (:func:`save_finetuned`) that
:func:`worldnet.features.backbones.build_backbone` applies on top of the
pretrained weights, so extraction, the ONNX export and every predictor use it
unchanged.

Reproducible (seeded: the same seed gives the same weights) and resumable: the
activation cache is written shard by shard, and a checkpoint after every epoch
holds the weights, the optimiser, the schedule and the random state, so a
killed run continues where it stopped and ends with the same weights.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn
from tqdm import tqdm
from upath import UPath

from worldnet.data.dataset import ShardBatchDataset
from worldnet.features.backbones import Backbone
from worldnet.features.preprocess import decode_for, normalise_batch
from worldnet.io import write_bytes_atomic, write_text_atomic
from worldnet.storage import as_path, load_npy, npy_rows

#: Stored with every fine-tuned file; a file of another format is refused with a clear message.
FORMAT = "worldnet-finetuned-1"


@dataclass(frozen=True)
class FinetuneConfig:
    """How the last stages are trained (defaults chosen by measurement: ``docs/method.md``, "Fine-tuning")."""

    #: Trailing block stages trained, with ``conv_head`` (EfficientNet-Lite has 7; 2 trains the 192- and 320-channel stages).
    stages: int = 2
    epochs: int = 8
    #: Peak learning rate of the trained stages (one-cycle schedule); the linear layer over clusters gets ``head_lr``.
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 32
    #: Smallest side of a random feature-map crop, as a fraction (1: no crop).
    crop: float = 0.8
    dropout: float = 0.3
    #: Epochs without a better validation loss before stopping (the best epoch's weights are kept).
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1 (got {self.stages})")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1 (got {self.epochs})")
        if not 0.1 <= self.crop <= 1.0:
            raise ValueError(f"crop must be within [0.1, 1] (got {self.crop})")
        if self.lr <= 0 or self.head_lr <= 0:
            raise ValueError("learning rates must be > 0")


def supports_finetuning(backbone_name: str) -> bool:
    """Whether ``backbone_name`` has the stage structure fine-tuning cuts (the EfficientNet-Lite family)."""
    return backbone_name.startswith("efficientnet_lite")


def split_backbone(backbone: Backbone, stages: int) -> tuple[nn.Module, nn.Module]:
    """(frozen front, trained tail) of an EfficientNet-Lite body; the tail shares the backbone's modules.

    Raises:
        ValueError: For a backbone without block stages, or more stages than it has.
    """
    if not supports_finetuning(backbone.spec.name):
        raise ValueError(f"fine-tuning needs an EfficientNet-Lite backbone, not {backbone.spec.name!r}")
    body = backbone.body
    blocks = list(body[2])  # type: ignore[index, arg-type]
    if not 1 <= stages < len(blocks):
        raise ValueError(f"stages must be within 1..{len(blocks) - 1} for {backbone.spec.name} (got {stages})")
    front = nn.Sequential(body[0], body[1], *blocks[: len(blocks) - stages])  # type: ignore[index]
    tail = nn.Sequential(*blocks[len(blocks) - stages :], body[3], body[4])  # type: ignore[index]
    return front, tail


# --- which photos ---------------------------------------------------------------------------------


def finetune_rows(labels: pl.DataFrame, protocols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, validation mask) over ``labels``' rows for fine-tuning.

    One backbone serves every protocol of a run, so it trains only on photos
    that are ``train`` in all of them, and stops on photos that are ``val`` in
    one and ``test`` in none. Test photos of any protocol are never used.

    Raises:
        ValueError: When no photo is training in every protocol.
    """
    train = np.ones(labels.height, bool)
    not_test = np.ones(labels.height, bool)
    for p in protocols:
        split = labels[p].to_numpy()
        train &= split == "train"
        not_test &= split != "test"
    val = not_test & ~train
    if not train.any():
        raise ValueError(
            f"no photo is in the training split of every protocol ({', '.join(protocols)}); fine-tuning has nothing to learn from"
        )
    return train, val


# --- the activation cache -------------------------------------------------------------------------


@dataclass
class Activations:
    """Cached front activations: ``data[i, m]`` is image ``ids[i]`` (m=1: its mirror image), float16 (N, M, C, h, w)."""

    ids: list[str]
    data: np.ndarray

    @property
    def mirrored(self) -> bool:
        return int(self.data.shape[1]) == 2


def _front_on(front: nn.Module, backbone: Backbone, images: torch.Tensor, mirror: bool) -> np.ndarray:
    x = normalise_batch(images, backbone.spec)
    n = x.shape[0]
    with torch.no_grad():  # the front is frozen: no graph to keep, whoever calls
        a = front(torch.cat([x, x.flip(3)]) if mirror else x)
    out = torch.stack([a[:n], a[n:]], 1) if mirror else a[:, None]
    return out.to(torch.float16).cpu().numpy()


def _front_runner(front: nn.Module, backbone: Backbone, engine: str, threads: int) -> Callable[[torch.Tensor, bool], np.ndarray]:
    """uint8 NHWC batch → front activations (photo, and mirror if asked), float16.

    ``onnx``: the front exported to ONNX Runtime, about 1.5× PyTorch eager on
    CPU (``benchmarks/bench_finetune.py``); ``torch`` otherwise (and on CUDA).
    """
    if engine == "onnx":
        from worldnet.features.engine import export_module
        from worldnet.features.onnx_graph import OnnxBackbone

        graph = OnnxBackbone(backbone.spec, export_module(front, backbone.spec), "<memory>/front", threads)

        def run(images: torch.Tensor, mirror: bool) -> np.ndarray:
            x = images.numpy()
            n = len(x)
            a = graph(np.concatenate([x, x[:, :, ::-1]]) if mirror else x)
            out = np.stack([a[:n], a[n:]], 1) if mirror else a[:, None]
            return out.astype(np.float16)

        return run
    dev = next(front.parameters()).device
    return lambda images, mirror: _front_on(front, backbone, images.to(dev), mirror)


def cache_activations(
    backbone: Backbone,
    stages: int,
    shards: list[UPath],
    cache_dir: str | Path | UPath,
    *,
    mirror: bool,
    key: str,
    threads: int = 1,
    engine: str = "onnx",
    progress: bool = True,
) -> Activations:
    """The front's activations of every image of ``shards`` (and of its mirror image if ``mirror``), cached per shard.

    Each shard's cache (``act-k.npy`` + ``act-k.json``: its ids and ``key``) is
    written atomically as soon as the shard is done, so a killed run recomputes
    only the shard in flight. ``key`` names what the cache is of (image shard
    checksums, backbone, view, stages): a cache of another key is recomputed.
    ``engine``: ``onnx`` (CPU) or ``torch`` (the backbone's device).
    """
    front, _ = split_backbone(backbone, stages)
    front.eval()
    out = as_path(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in shards if _cached_ids(out, s, key) is None]
    n_todo = sum(_shard_rows(s) for s in todo)
    bar = tqdm(total=n_todo, desc="fine-tune cache", unit="img", disable=not progress or not n_todo)
    run = _front_runner(front, backbone, engine, threads) if todo else None
    decode = partial(decode_for, backbone.spec)
    ds = ShardBatchDataset(todo, decode, 16, decode_threads=threads)
    pending: dict[int, tuple[list[str], list[np.ndarray]]] = {}
    with torch.inference_mode():
        for batch in ds:
            ids, chunks = pending.setdefault(batch.shard, ([], []))
            ids.extend(batch.ids)
            chunks.append(run(batch.images, mirror))  # type: ignore[misc]
            bar.update(len(batch.ids))
            shard = todo[batch.shard]
            if len(ids) == _shard_rows(shard):
                _write_cache(out, shard, key, ids, np.concatenate(chunks))
                del pending[batch.shard]
    bar.close()
    ids_all: list[str] = []
    parts: list[np.ndarray] = []
    for s in shards:
        got = _cached_ids(out, s, key)
        if got is None:  # an empty shard yields no batch
            _write_cache(out, s, key, [], np.zeros((0,), np.float16))
            continue
        if got:
            ids_all.extend(got)
            parts.append(load_npy(_cache_pair(out, s)[0]))
    data = np.concatenate(parts) if parts else np.zeros((0, 1, 1, 1, 1), np.float16)
    return Activations(ids_all, data)


def _shard_rows(shard: UPath) -> int:
    from worldnet.storage import read_parquet

    return read_parquet(shard, columns=["image_id"]).height


def _cache_pair(out: UPath, shard: UPath) -> tuple[UPath, UPath]:
    stem = shard.stem.replace("shard-", "act-")
    return out / f"{stem}.npy", out / f"{stem}.json"


def _shard_key(shard: UPath, key: str) -> str:
    """``key`` and the image shard's checksum (its sidecar's): a rewritten shard is cached again."""
    side = shard.with_suffix(".json")
    sha = json.loads(side.read_text()).get("sha256") if side.is_file() else None
    return f"{key}|{sha}"


def _cached_ids(out: UPath, shard: UPath, key: str) -> list[str] | None:
    npy, side = _cache_pair(out, shard)
    key = _shard_key(shard, key)
    if not (npy.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
        if meta.get("key") != key:
            return None
        ids = [str(i) for i in meta["ids"]]
        return ids if not ids or npy_rows(npy) == len(ids) else None
    except Exception:  # noqa: BLE001 - an unreadable leftover is recomputed
        return None


def _write_cache(out: UPath, shard: UPath, key: str, ids: list[str], data: np.ndarray) -> None:
    npy, side = _cache_pair(out, shard)
    buf = io.BytesIO()
    np.save(buf, data)
    write_bytes_atomic(npy, buf.getvalue())
    write_text_atomic(side, json.dumps({"key": _shard_key(shard, key), "ids": ids}))  # last: marks the pair complete


# --- training -------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """The trained tail's weights (best validation epoch) and what training saw."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    resumed_from: int = 0


class _Model(nn.Module):
    def __init__(self, tail: nn.Module, dim: int, k: int, dropout: float):
        super().__init__()
        self.tail, self.drop, self.linear = tail, nn.Dropout(dropout), nn.Linear(dim, k)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        pooled = self.tail(a).mean(dim=(2, 3))
        logits: torch.Tensor = self.linear(self.drop(pooled))
        return logits


def _batch(acts: np.ndarray, rows: np.ndarray, mirror: np.ndarray | None, crop: tuple[int, int, int, int] | None) -> torch.Tensor:
    m = mirror if mirror is not None else np.zeros(len(rows), np.int64)
    a = torch.from_numpy(np.stack([np.asarray(acts[r, mm]) for r, mm in zip(rows, m, strict=True)])).float()
    if crop is not None:
        y0, x0, h, w = crop
        a = a[:, :, y0 : y0 + h, x0 : x0 + w]
    return a.contiguous(memory_format=torch.channels_last)


def _random_crop(rng: np.random.Generator, shape: tuple[int, int], frac: float) -> tuple[int, int, int, int] | None:
    if frac >= 1.0:
        return None
    H, W = shape
    h = max(1, round(H * rng.uniform(frac, 1.0)))
    w = max(1, round(W * rng.uniform(frac, 1.0)))
    return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * logits.log_softmax(1)).sum(1).mean()


def _val_loss(model: _Model, acts: np.ndarray, rows: np.ndarray, targets: np.ndarray, batch: int) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(rows), batch):
            logits = model(_batch(acts, rows[i : i + batch], None, None))
            total += float(_soft_ce(logits, torch.from_numpy(targets[i : i + batch]).float())) * len(rows[i : i + batch])
    return total / max(1, len(rows))


def finetune_tail(
    backbone: Backbone,
    acts: Activations,
    train_rows: np.ndarray,
    train_targets: np.ndarray,
    val_rows: np.ndarray,
    val_targets: np.ndarray,
    cfg: FinetuneConfig,
    *,
    checkpoint: str | Path | UPath | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> FinetuneResult:
    """Train the backbone's last ``cfg.stages`` stages (and ``conv_head``) on cached activations; the best epoch's weights.

    ``train_rows`` / ``val_rows`` index ``acts``; targets are soft (rows sum
    to 1) over the clusters. The validation loss picks the epoch (no
    validation rows: the last epoch). ``checkpoint`` (a file) makes training
    resumable; ``stop_after`` stops after that many epochs in this call (to
    test resuming). The backbone's tail is left holding the best weights.

    Raises:
        ValueError: For targets that do not match the rows, or no training rows.
    """
    if len(train_rows) == 0:
        raise ValueError("fine-tuning needs at least one training photo")
    if len(train_targets) != len(train_rows) or len(val_targets) != len(val_rows):
        raise ValueError("targets must have one row per training / validation photo")
    t0 = time.perf_counter()
    _, tail = split_backbone(backbone, cfg.stages)
    k = int(train_targets.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = _Model(tail, backbone.spec.dim, k, cfg.dropout)
    model.to(memory_format=torch.channels_last)  # 1.5x a training step on 2 CPU cores (benchmarks/bench_finetune.py)
    opt = torch.optim.AdamW(
        [{"params": tail.parameters(), "lr": cfg.lr}, {"params": model.linear.parameters(), "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = int(np.ceil(len(train_rows) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.lr, cfg.head_lr], total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    rng = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = float("inf"), -1, {k_: v.clone() for k_, v in tail.state_dict().items()}
    start = 0
    ckpt = as_path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.is_file():
        saved = _load_checkpoint(ckpt)
        if saved is not None and saved["config"] == asdict(cfg) and saved["rows"] == _rows_digest(train_rows, val_rows):
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            sched.load_state_dict(saved["sched"])
            rng.bit_generator.state = saved["rng"]
            torch_gen.set_state(saved["torch_rng"])
            history, best_loss, best_epoch = saved["history"], saved["best_loss"], saved["best_epoch"]
            best_state = saved["best_state"]
            start = len(history)
    resumed = start
    spatial = (int(acts.data.shape[3]), int(acts.data.shape[4]))
    mirror = acts.mirrored
    patience_left = cfg.patience - (len(history) - 1 - best_epoch) if history else cfg.patience
    bar = tqdm(total=cfg.epochs, initial=start, desc="fine-tune", unit="epoch", disable=not progress)
    for epoch in range(start, cfg.epochs):
        if patience_left <= 0 or (stop_after is not None and epoch - start >= stop_after):
            break
        t = time.perf_counter()
        model.train()
        for mod in tail.modules():  # batch norms keep ImageNet's statistics
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()
        perm = rng.permutation(len(train_rows))
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            j = perm[i : i + cfg.batch_size]
            flips = rng.integers(0, 2, len(j)) if mirror else None
            a = _batch(acts.data, train_rows[j], flips, _random_crop(rng, spatial, cfg.crop))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=torch_gen)))
                loss = _soft_ce(model(a), torch.from_numpy(train_targets[j]).float())
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(j)
        val = _val_loss(model, acts.data, val_rows, val_targets, 64) if len(val_rows) else float("nan")
        history.append({"epoch": epoch, "train_loss": total / len(perm), "val_loss": val, "seconds": time.perf_counter() - t})
        if not len(val_rows) or val < best_loss:
            best_loss, best_epoch = (val if len(val_rows) else 0.0), epoch
            best_state = {k_: v.clone() for k_, v in tail.state_dict().items()}
            patience_left = cfg.patience
        else:
            patience_left -= 1
        if ckpt is not None:
            _save_checkpoint(ckpt, model, opt, sched, rng, torch_gen, cfg, train_rows, val_rows, history, best_loss, best_epoch, best_state)
        bar.update(1)
        bar.set_postfix(val=f"{val:.3f}")
    bar.close()
    tail.load_state_dict(best_state)
    tail.eval()
    return FinetuneResult(best_state, history, best_epoch, time.perf_counter() - t0, resumed)


def _rows_digest(train_rows: np.ndarray, val_rows: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256(np.asarray(train_rows, np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(val_rows, np.int64).tobytes())
    return h.hexdigest()


def _save_checkpoint(
    path: UPath,
    model: _Model,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    torch_gen: torch.Generator,
    cfg: FinetuneConfig,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    history: list[dict[str, float]],
    best_loss: float,
    best_epoch: int,
    best_state: dict[str, torch.Tensor],
) -> None:
    blob = {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "rng": rng.bit_generator.state,
        "torch_rng": torch_gen.get_state(),
        "config": asdict(cfg),
        "rows": _rows_digest(train_rows, val_rows),
        "history": history,
        "best_loss": best_loss,
        "best_epoch": best_epoch,
        "best_state": best_state,
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    write_bytes_atomic(path, buf.getvalue())


def _load_checkpoint(path: UPath) -> dict[str, Any] | None:
    try:
        with path.open("rb") as fh:
            blob: dict[str, Any] = torch.load(fh, map_location="cpu", weights_only=False)
        return blob
    except Exception:  # noqa: BLE001 - a damaged checkpoint means starting over, never a crash
        return None


# --- features from the cache and the saved file ---------------------------------------------------


def features_from_cache(backbone: Backbone, acts: Activations, stages: int, batch: int = 64) -> np.ndarray:
    """Pooled features of every cached image through the (fine-tuned) tail, mirror-averaged as the backbone's view does.

    Equal to the backbone's own features up to the cache's float16 rounding;
    cross-validation uses it to score a fold's backbone without decoding a photo again.
    """
    _, tail = split_backbone(backbone, stages)
    tail.eval().to(memory_format=torch.channels_last)

    def pooled(x: torch.Tensor) -> torch.Tensor:
        f: torch.Tensor = tail(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        return f

    out = np.zeros((len(acts.ids), backbone.spec.dim), np.float32)
    with torch.inference_mode():
        for i in range(0, len(acts.ids), batch):
            a = torch.from_numpy(np.asarray(acts.data[i : i + batch])).float()
            n = a.shape[0]
            if acts.mirrored and backbone.spec.flip:
                f = pooled(torch.cat([a[:, 0], a[:, 1]]))
                out[i : i + n] = ((f[:n] + f[n:]) / 2).numpy()
            else:
                out[i : i + n] = pooled(a[:, 0]).numpy()
    return out


def save_finetuned(
    path: str | Path | UPath, backbone_name: str, stages: int, state: dict[str, torch.Tensor], meta: dict[str, object]
) -> UPath:
    """Write the fine-tuned stages (``state``) and how they were made, atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "backbone": backbone_name, "stages": stages, "state": state, "meta": json.dumps(meta)}, buf)
    out = as_path(path)
    write_bytes_atomic(out, buf.getvalue())
    return out


@dataclass
class Finetuned:
    """What :func:`save_finetuned` wrote."""

    backbone: str
    stages: int
    state: dict[str, torch.Tensor]
    meta: dict[str, object]


def load_finetuned(path: str | Path | UPath) -> Finetuned:
    """Read a fine-tuned file (``weights_only``: a file holding code is refused).

    Raises:
        ValueError: When the file is not a worldnet fine-tuned backbone.
    """
    try:
        with as_path(path).open("rb") as fh:
            blob = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a garbage file raises many types; all mean the same
        raise ValueError(f"{path} is not a worldnet fine-tuned backbone ({type(exc).__name__}); rerun the 'finetune' stage") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a worldnet fine-tuned backbone (format {FORMAT}); rerun the 'finetune' stage")
    return Finetuned(str(blob["backbone"]), int(blob["stages"]), dict(blob["state"]), json.loads(str(blob["meta"])))


def apply_finetuned(backbone: Backbone, tuned: Finetuned) -> Backbone:
    """Load the fine-tuned stages into ``backbone`` (built from the same pretrained weights).

    Raises:
        ValueError: When the file was made for another backbone.
    """
    if tuned.backbone != backbone.spec.name:
        raise ValueError(f"the fine-tuned stages are for {tuned.backbone}, not {backbone.spec.name}; pass backbone={tuned.backbone!r}")
    _, tail = split_backbone(backbone, tuned.stages)
    tail.load_state_dict(tuned.state)
    return backbone.eval()


# --- targets: the classifier's own objective --------------------------------------------------------


def place_targets(
    train: pl.DataFrame, val: pl.DataFrame, strategy: str = "auto", k: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Soft targets over clusters of the training photos, as the classifier stage makes them.

    Returns ``(train targets, validation keep mask, validation targets, clusters)``:
    validation photos whose city has no cluster (city clustering) are left out.
    """
    from worldnet.clustering import cluster_locations
    from worldnet.models.worldnet_model import TrainConfig, classifier_targets
    from worldnet.protocol import cluster_labels

    centroids, _ = cluster_locations(train, strategy, k=k, seed=seed)
    c = centroids.select("lat", "lon").to_numpy()
    y_tr = cluster_labels(train, centroids, strategy)
    t_tr = classifier_targets(train.select("lat", "lon").to_numpy(), c, y_tr, TrainConfig())
    y_va = cluster_labels(val, centroids, strategy)
    keep = y_va >= 0
    t_va = (
        classifier_targets(val.select("lat", "lon").to_numpy()[keep], c, y_va[keep], TrainConfig()) if keep.any() else np.zeros((0, len(c)))
    )
    return t_tr.astype(np.float32), keep, t_va.astype(np.float32), centroids.height


def calibration_split(labels: pl.DataFrame, train: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """The training photos fine-tuning may use: ``train`` less a ``share`` of its places, kept for the head.

    The held-out places (every view of a place together) are photos the
    backbone never trains on, so the crossfit head calibrates on probabilities
    that look like a new photo's (:func:`worldnet.protocol.head_rows_for`).
    """
    from worldnet.data.split import place_keys

    if not 0.0 <= share < 1.0:
        raise ValueError(f"share must be within [0, 1) (got {share})")
    places = place_keys(labels)
    uniq = np.unique(places[train])
    rng = np.random.default_rng(seed)
    held = set(rng.choice(uniq, size=round(share * len(uniq)), replace=False).tolist()) if share > 0 else set()
    return train & ~np.isin(places, list(held))


def fold_finetuner(
    make_backbone: Callable[[], Backbone],
    acts: Activations,
    labels: pl.DataFrame,
    cfg: FinetuneConfig,
    *,
    strategy: str = "auto",
    k: int = 0,
    calibration_share: float = 0.25,
    progress: bool = False,
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``fold_features`` for :func:`worldnet.evaluate.cross_validate`: each fold fine-tunes a fresh backbone on its own
    training photos (less ``calibration_share`` of their places, for the head) and embeds every photo from the cache.

    ``acts`` must hold ``labels``' photos in ``labels``' order.
    """
    if acts.ids != labels["image_id"].to_list():
        raise ValueError("the activations must hold the labels' photos in the labels' order")

    def features(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tune = calibration_split(labels, train, calibration_share, cfg.seed)
        t_tr, keep, t_va, _ = place_targets(labels.filter(pl.Series(tune)), labels.filter(pl.Series(val)), strategy, k, cfg.seed)
        bb = make_backbone()
        finetune_tail(bb, acts, np.flatnonzero(tune), t_tr, np.flatnonzero(val)[keep], t_va, cfg, progress=progress)
        return features_from_cache(bb, acts, cfg.stages), tune

    return features


__all__ = [
    "Activations",
    "FinetuneConfig",
    "FinetuneResult",
    "Finetuned",
    "apply_finetuned",
    "cache_activations",
    "calibration_split",
    "fold_finetuner",
    "features_from_cache",
    "finetune_rows",
    "finetune_tail",
    "load_finetuned",
    "place_targets",
    "save_finetuned",
    "split_backbone",
    "supports_finetuning",
]
