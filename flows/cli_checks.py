"""The CLI's checks of its options, answered in a second: none of them imports torch, Prefect or MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flows.cli_errors import store_file
from tasks.config import STAGES

if TYPE_CHECKING:
    from tasks.config import PipelineConfig


def check_classifier(classifier: str, members: int = 1, feature_power: float = 1.0) -> None:
    if classifier not in ("mlp", "linear"):
        raise ValueError(f"--classifier {classifier!r} is unknown; choose mlp or linear")
    if members < 1:
        raise ValueError(f"--members {members}: the ensemble needs at least one MLP (1 is the paper's classifier)")
    if not 0 < feature_power <= 1:
        raise ValueError(f"--feature-power {feature_power}: choose a power in (0, 1]; 1 uses the features as extracted")


def preflight(root: str, backbone: str, weights: str | None, only: str | None, from_stage: str | None) -> None:
    """Check what can be checked before Prefect or MLflow start, so a mistake is answered in a second, not a minute.

    Raises:
        ValueError: Naming the option and what to do.
    """
    import os

    from worldnet.features.names import BACKBONES_WITH_WEIGHTS, available_backbones
    from worldnet.storage import is_local, local_path

    for opt, stage in (("--only", only), ("--from", from_stage)):
        if stage is not None and stage not in STAGES:
            raise ValueError(f"{opt} {stage!r} is not a stage; stages are {', '.join(STAGES)}")
    if backbone not in available_backbones():
        raise ValueError(f"--backbone {backbone!r} is unknown; choose one of {', '.join(available_backbones())}")
    if weights is not None:
        if backbone not in BACKBONES_WITH_WEIGHTS:
            raise ValueError(f"--weights is for {', '.join(BACKBONES_WITH_WEIGHTS)}; {backbone!r} ships its own weights: drop --weights")
        if not Path(weights).expanduser().is_file():
            raise ValueError(f"--weights {weights} is not a file: give the path of the downloaded .pth file")
        with open(Path(weights).expanduser(), "rb") as fh:
            head = fh.read(4)
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
            raise ValueError(f"--weights {weights} is not a PyTorch weights file (.pth): give torchvision's {backbone} weights")
    if is_local(root):
        path = local_path(root)
        if path.exists() and not path.is_dir():
            raise ValueError(f"--root {root} is a file; give a folder (it is created if absent) or an s3:// URL")
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"--root {root} is not writable ({existing} is read-only for this user); choose a folder you can write")


def check_clusters(cluster: str, k: int) -> None:
    from worldnet.clustering import STRATEGIES

    if cluster not in STRATEGIES:
        raise ValueError(f"--cluster {cluster!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if not 0 <= k <= 100_000:
        raise ValueError(f"--k {k}: give a number of clusters from 1 to 100000, or 0 to choose it from the data")


def check_data_roots(roots: list[Path], dataset_kind: str) -> None:
    """Every ``--data-root`` exists and, read by its layout, names something worldnet reads."""
    from worldnet.data.ingest import dataset_name, detect_kind

    for r in roots:
        if not r.exists():
            raise ValueError(f"--data-root {r} does not exist: point it at a GSV-Cities folder (Dataframes/ + Images/) or a CSV")
        if dataset_kind == "auto":
            try:
                detect_kind(r)
            except FileNotFoundError as exc:
                raise ValueError(f"--data-root {exc}") from None
    names = [dataset_name(r) for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"--data-root given twice for datasets named {sorted({n for n in names if names.count(n) > 1})}: name each once")


def check_finetune(setting: str, backbone: str, stages: int, epochs: int | None) -> None:
    from tasks.config import resolve_finetune

    resolve_finetune(setting, backbone, 0, "cpu")
    if not 1 <= stages <= 6:
        raise ValueError(f"--finetune-stages {stages}: EfficientNet-Lite has 7 block stages; train 1 to 6")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--finetune-epochs {epochs}: train at least 1 epoch")


def check_view(input_height: int | None, flip: str) -> None:
    from worldnet.features.names import View, resolve_flip

    View(input_height, resolve_flip(flip, lambda: True))


def check_engine(engine: str, device: str) -> None:
    """``--engine`` against ``--device`` (``auto`` resolves per machine later)."""
    from worldnet.features.names import resolve_engine

    resolve_engine(engine, device if device in ("cpu", "cuda") else "cpu")


def parse_size(size: str) -> tuple[int, int]:
    """``WxH`` → (w, h); ``auto`` → (0, 300): the photos' own aspect at 300 px high."""
    if size == "auto":
        return 0, 300
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"--image-size must be auto or look like 600x300, got {size!r}") from None
    if w < 16 or h < 16:
        raise typer.BadParameter(f"--image-size must be at least 16x16, got {size!r}")
    if w > MAX_FRAME_SIDE or h > MAX_FRAME_SIDE:
        raise typer.BadParameter(f"--image-size {size!r}: each side must be at most {MAX_FRAME_SIDE} px (the backbone sees 300 px high)")
    return w, h


#: The largest shard frame side ``--image-size`` accepts: a frame is decoded for every photo, so 100000x100000 would be 10^10 pixels.
MAX_FRAME_SIDE = 4096


def check_numbers(seed: int, crossfit_weight_decay: float | None = None, folds: int | None = None) -> None:
    """Options that are plain numbers, checked by name before any work starts."""
    import math

    if not 0 <= seed < 2**32:
        raise ValueError(f"--seed {seed}: choose a seed from 0 to 4294967295")
    if crossfit_weight_decay is not None and not (math.isfinite(crossfit_weight_decay) and crossfit_weight_decay >= 0):
        raise ValueError(f"--crossfit-weight-decay {crossfit_weight_decay}: choose a finite number >= 0 (default 100)")
    if folds is not None and not 2 <= folds <= 100:
        raise ValueError(f"--folds {folds}: choose from 2 to 100 folds")


def check_options(
    cfg: PipelineConfig,
    *,
    protocol: str = "seen",
    only: str | None = None,
    from_stage: str | None = None,
    folds: int | None = None,
    data_roots: list[Path] | None = None,
) -> None:
    """Every check of a pipeline command's options, in one place, before anything heavy starts.

    Raises:
        ValueError: Naming the flag to change, for the first option that is wrong.
    """
    from worldnet.data.debias import check_debias_options
    from worldnet.head_modes import resolve_head_mode

    check_debias_options(cfg.debias_strategy, cap=cfg.debias_cap, max_share=cfg.debias_max_share, max_drop=cfg.debias_max_drop)
    resolve_head_mode(cfg.head_mode, protocol)
    preflight(cfg.root, cfg.backbone, cfg.backbone_weights, only, from_stage)
    check_engine(cfg.engine, cfg.device)
    check_view(cfg.input_height, cfg.flip)
    check_finetune(cfg.finetune, cfg.backbone, cfg.finetune_stages, cfg.finetune_epochs)
    check_classifier(cfg.classifier, cfg.members, cfg.feature_power)
    store = store_file(cfg.root)
    if store is not None:
        from tasks.store_check import check_sqlite_store

        check_sqlite_store(store)
    check_clusters(cfg.cluster_strategy, cfg.k)
    check_numbers(cfg.seed, cfg.crossfit_weight_decay, folds)
    if data_roots is not None:
        check_data_roots(data_roots, cfg.dataset_kind)
