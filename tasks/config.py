"""The pipeline's configuration: its stages, what each reads and writes, and every knob of a run.

Light to import (no Prefect, MLflow or torch): the CLI checks options against
it before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worldnet import defaults

if TYPE_CHECKING:
    from worldnet.catalog import Catalog
    from worldnet.features.names import View


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, declared once (kedro's ``node(func, inputs, outputs)``).

    Everything else about a stage comes from this: the pipeline's order, what reruns it (its catalog inputs and the
    configuration fields in ``params``), the per-stage flows, the CLI's stage list, ``prefect.yaml``'s deployments
    and the README's stage table (``python -m flows.declared --write``; a test fails on any drift).
    """

    name: str
    #: ``module:attribute`` of its Prefect task, imported only when the stage runs (this module stays light).
    task: str
    #: The library function that does the work, and how, as the README's table shows it.
    does: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: The configuration fields its result depends on: changing one reruns exactly the stages downstream of it.
    params: tuple[str, ...] = ()
    #: What it writes, as the README's table shows it (default: its outputs).
    writes: str = ""
    #: Whether a record proves it up to date (``register`` always runs).
    recorded: bool = True


#: The pipeline, in order.
PIPELINE: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "tasks.data_stages:ingest_task",
        "`worldnet.data.ingest.ingest`",
        ("raw_images",),
        ("manifest_raw", "rejects"),
        ("data_root", "dataset_kind", "strict"),
    ),
    Stage(
        "debias",
        "tasks.data_stages:debias_task",
        "`worldnet.data.debias.debias`",
        ("manifest_raw",),
        ("manifest_debiased",),
        ("debias_strategy", "debias_cap", "debias_max_share", "debias_max_drop", "seed"),
    ),
    Stage(
        "split",
        "tasks.data_stages:split_task",
        "`worldnet.data.split.make_splits`",
        ("manifest_debiased",),
        ("splits",),
        ("test_fraction", "val_fraction", "unseen_cities", "n_unseen", "seed"),
    ),
    Stage(
        "shard",
        "tasks.data_stages:shard_task",
        "`worldnet.data.shards.write_shard`, one task per shard",
        ("manifest_debiased", "splits", "raw_images"),  # a photo's new bytes re-frame it
        ("image_shards", "shard_rejects"),
        ("shard_size", "image_width", "image_height", "strict"),
    ),
    Stage(
        "finetune",
        "tasks.finetune_stage:finetune_task",
        "`worldnet.features.finetune.finetune_tail` on cached front activations (`--finetune auto/on/off`)",
        ("image_shards",),
        ("finetuned_backbone",),
        (
            "finetune",
            "finetune_stages",
            "finetune_epochs",
            "backbone",
            "input_height",
            "flip",
            "cluster_strategy",
            "k",
            "seed",
            "protocols",
            "device",
        ),
        writes="`finetuned_backbone` (scratch: `finetune_cache`)",
    ),
    Stage(
        "extract_features",
        "tasks.data_stages:extract_task",
        "`worldnet.features.extract.extract_features`, one task per shard (ONNX Runtime on CPU), with the fine-tuned stages if any",
        ("image_shards", "manifest_debiased", "finetuned_backbone"),  # the manifest settles flip=auto
        ("feature_shards",),
        ("backbone", "backbone_weights", "input_height", "flip", "flat_features", "device"),
        writes="`feature_shards`, `onnx_graphs`",
    ),
    Stage(
        "cluster",
        "tasks.model_stages:cluster_task",
        "`worldnet.protocol.cluster_step`",
        ("feature_shards",),
        ("centroids",),
        ("cluster_strategy", "k", "seed", "protocols"),
        writes="`centroids` (per protocol)",
    ),
    Stage(
        "train_classifier",
        "tasks.model_stages:train_classifier_task",
        "`worldnet.protocol.train_classifier_step`",
        ("feature_shards", "centroids"),
        ("classifier",),
        ("cluster_strategy", "classifier", "members", "feature_power", "seed", "protocols"),
    ),
    Stage(
        "train_interpolation",
        "tasks.model_stages:train_interpolation_task",
        "`worldnet.protocol.train_interpolation_step`",
        ("feature_shards", "centroids", "classifier", "finetuned_backbone"),
        ("worldnet_model",),
        ("cluster_strategy", "classifier", "members", "feature_power", "crossfit_weight_decay", "seed", "snap", "backbone", "protocols"),
        writes="`worldnet_model` (both head modes)",
    ),
    Stage(
        "train_baselines",
        "tasks.model_stages:train_baselines_task",
        "`worldnet.protocol.train_baselines_step`",
        ("feature_shards",),
        ("baseline_predictions",),
        ("seed", "protocols"),
    ),
    Stage(
        "evaluate",
        "tasks.model_stages:evaluate_task",
        "`worldnet.evaluate.evaluate_step`",
        ("feature_shards", "centroids", "worldnet_model", "baseline_predictions"),
        ("predictions", "metrics", "evaluation_summary"),
        ("head_mode", "snap", "seed", "protocols"),
    ),
    Stage(
        "report",
        "tasks.model_stages:report_task",
        "`worldnet.report.write_report`",
        ("predictions", "metrics", "evaluation_summary", "worldnet_model", "centroids", "rejects", "shard_rejects"),
        ("report",),
        ("head_mode", "protocols"),
        writes="`report` (Markdown, CSV, maps, error CDFs, continent confusion)",
    ),
    Stage(
        "register",
        "tasks.registry:register_task",
        "`tasks.registry.register_task`",
        ("worldnet_model", "metrics"),
        (),
        writes="MLflow model `worldnet` (`challenger`; `champion` if better)",
        recorded=False,
    ),
)

STAGES = tuple(s.name for s in PIPELINE)
#: What each stage reads and writes, by catalog name (drives caching, lineage and restores).
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {s.name: (s.inputs, s.outputs) for s in PIPELINE}
#: The configuration fields each recorded stage's result depends on.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {s.name: s.params for s in PIPELINE if s.recorded}


def stage(name: str) -> Stage:
    """The declaration of stage ``name``.

    Raises:
        ValueError: For a name that is not a stage.
    """
    for s in PIPELINE:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")


def stage_task(name: str) -> Any:
    """The Prefect task of stage ``name``, imported now (its module imports Prefect and MLflow)."""
    import importlib

    module, attr = stage(name).task.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class PipelineConfig:
    """Every knob of a pipeline run (all JSON-serialisable, logged to MLflow as params)."""

    #: The input dataset, or several read together (each with its own layout; see :func:`worldnet.data.ingest.ingest_many`).
    data_root: str | list[str] = defaults.SYNTHETIC_DATA
    root: str = defaults.ROOT
    dataset_kind: str = "auto"
    strict: bool = False
    debias_strategy: str = "balance_continents"
    debias_cap: int = 100
    debias_max_share: float = 0.45
    debias_max_drop: float = 0.5
    test_fraction: float = 0.3
    val_fraction: float = 0.1
    unseen_cities: list[str] | None = None
    n_unseen: int = 5
    shard_size: int = 256
    #: Shard frame; width 0 = the photos' own median aspect at this height (a 2:1 panorama keeps its sides).
    image_width: int = 0
    image_height: int = 300
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    #: Pixels high the backbone sees each photo (None: its default, 300 for EfficientNet-Lite: the shard frame as it is).
    input_height: int | None = None
    #: Average each photo's features with its mirror image's: auto (where all photos drive on one side), on, off.
    flip: str = "auto"
    flat_features: bool = False
    #: Fine-tune the backbone's last stages on the training photos (:func:`resolve_finetune`): auto, on or off.
    finetune: str = "auto"
    #: Trailing block stages fine-tuned (with the 1x1 head convolution), and their epochs.
    finetune_stages: int = 2
    finetune_epochs: int | None = None  # None: finetune_epochs() chooses (8, fewer on a CPU for large sets)
    device: str = "auto"
    #: Backbone engine: auto (ONNX Runtime on CPU, PyTorch on CUDA), onnx or torch; features agree to cosine > 0.9999.
    engine: str = "auto"
    #: auto (city when the groups are compact, else spherical k-means), city or kmeans; see :mod:`worldnet.clustering`.
    cluster_strategy: str = "auto"
    #: kmeans clusters; 0 chooses k from the training places.
    k: int = 0
    head_mode: str = "auto"
    #: mlp (the paper's, default) or linear (PCA whitening + softmax regression; fastest at hundreds of thousands of photos).
    classifier: str = defaults.CLASSIFIER
    crossfit_weight_decay: float = defaults.CROSSFIT_WEIGHT_DECAY
    #: MLPs in the classifier's ensemble, as many as the sample budget pays for (TrainConfig.members; 1: the paper's one MLP).
    members: int = defaults.MEMBERS
    #: Signed power on the classifier's features before standardising (TrainConfig.feature_power; 1: as extracted).
    feature_power: float = defaults.FEATURE_POWER
    snap: bool = True
    seed: int = 0
    protocols: list[str] = field(default_factory=lambda: ["seen", "unseen"])
    progress: bool = True
    mlflow_artifact_limit_mb: float = 256.0

    def check(self, *, protocol: str = "seen", only: str | None = None, from_stage: str | None = None, data: bool = True) -> None:
        """Every check of this configuration, in one place, before anything heavy starts (none imports torch,
        Prefect or MLflow). ``data``: also check the data roots (not when a stage reruns on recorded data).

        Raises:
            ValueError: Naming the parameter to change (``name=value``), for the first that is wrong.
        """
        from worldnet.data.debias import check_debias_options
        from worldnet.head_modes import resolve_head_mode

        check_debias_options(self.debias_strategy, cap=self.debias_cap, max_share=self.debias_max_share, max_drop=self.debias_max_drop)
        resolve_head_mode(self.head_mode, protocol)
        preflight(self.root, self.backbone, self.backbone_weights, only, from_stage)
        check_engine(self.engine, self.device)
        check_view(self.input_height, self.flip)
        check_finetune(self.finetune, self.backbone, self.finetune_stages, self.finetune_epochs)
        check_classifier(self.classifier, self.members, self.feature_power)
        check_clusters(self.cluster_strategy, self.k)
        check_numbers(self.seed, self.crossfit_weight_decay)
        if data:
            check_data_roots([Path(r) for r in self.data_roots()], self.dataset_kind)

    def view(self, one_driving_side: Callable[[], bool]) -> View:
        """How the backbone looks at the photos; ``one_driving_side`` settles ``flip='auto'`` (a ValueError for bad settings)."""
        from worldnet.features.names import View, resolve_flip

        return View(self.input_height, resolve_flip(self.flip, one_driving_side))

    def data_roots(self) -> list[str]:
        """Every input dataset, in the order given."""
        return [self.data_root] if isinstance(self.data_root, str) else list(self.data_root)

    def catalog(self) -> Catalog:
        from worldnet.catalog import Catalog

        return Catalog.from_yaml(self.root, data_root=self.data_roots()[0], backbone=self.backbone)

    def tracking_root(self) -> Path:
        """Local folder for the MLflow store (see :func:`tasks.tracking.tracking_root`)."""
        from tasks.tracking import tracking_root

        return tracking_root(self.root)


FINETUNE_SETTINGS = ("auto", "on", "off")
#: ``finetune=auto`` fine-tunes from this many training photos (fewer: the frozen features; see docs/method.md).
FINETUNE_MIN_PHOTOS = 500
#: Epochs when nothing caps them (a GPU, or a small set on a CPU); the best validation epoch is kept.
FINETUNE_EPOCHS = 8
#: On a CPU, ``auto`` trains at most this many photo-epochs per job (about 4.5 minutes on 2 cores at the Street View
#: view: 2,558 photos took 54 s an epoch), and never fewer than FINETUNE_MIN_EPOCHS each (docs/method.md measures
#: 4 epochs within a few per cent of 8 on street_world). A job that cannot afford them keeps the frozen features.
FINETUNE_CPU_PHOTO_EPOCHS = 12_000
FINETUNE_MIN_EPOCHS = 3


def finetune_epochs(requested: int | None, train_photos: int, device: str, backbones: int = 1) -> int:
    """Epochs to fine-tune: ``requested`` if given, else FINETUNE_EPOCHS capped on a CPU by the photo-epoch budget.

    ``backbones`` is how many are trained on about ``train_photos`` each (``cv`` trains one per fold).
    """
    if requested is not None:
        return requested
    if device == "cuda":
        return FINETUNE_EPOCHS
    affordable = FINETUNE_CPU_PHOTO_EPOCHS // max(1, train_photos * backbones)
    return max(FINETUNE_MIN_EPOCHS, min(FINETUNE_EPOCHS, affordable))


def resolve_finetune(setting: str, backbone: str, train_photos: int, device: str, backbones: int = 1) -> tuple[bool, str]:
    """Whether to fine-tune, and why: ``on`` and ``off`` as asked; ``auto`` by backbone, data size and device.

    On a CPU ``auto`` fine-tunes only when FINETUNE_MIN_EPOCHS over ``train_photos`` for each of ``backbones`` fit
    FINETUNE_CPU_PHOTO_EPOCHS (a ``run`` up to 4,000 training photos; ``cv``, one backbone per fold, rarely).

    Raises:
        ValueError: For an unknown setting, or ``on`` with a backbone that cannot be fine-tuned.
    """
    if setting not in FINETUNE_SETTINGS:
        raise ValueError(f"finetune must be one of {', '.join(FINETUNE_SETTINGS)} (got {setting!r})")
    lite = backbone.startswith("efficientnet_lite") and not backbone.endswith("_random")
    if setting == "off":
        return False, "off as asked"
    if setting == "on":
        if not lite:
            raise ValueError(f"finetune='on' needs a pretrained EfficientNet-Lite backbone, not {backbone!r}")
        return True, "on as asked"
    if not lite:
        return False, f"auto: {backbone} has no pretrained stages to fine-tune"
    if train_photos < FINETUNE_MIN_PHOTOS:
        return False, f"auto: {train_photos} training photos, under {FINETUNE_MIN_PHOTOS}"
    many = f" for each of {backbones} backbones" if backbones > 1 else ""
    if device != "cuda" and train_photos * backbones * FINETUNE_MIN_EPOCHS > FINETUNE_CPU_PHOTO_EPOCHS:
        return False, (
            f"auto: {FINETUNE_MIN_EPOCHS} epochs over {train_photos} training photos{many} exceed a CPU's budget of "
            f"{FINETUNE_CPU_PHOTO_EPOCHS:,} photo-epochs (pass finetune='on', or use a GPU)"
        )
    return True, f"auto: {train_photos} training photos{many} on {device}"


# --- the checks PipelineConfig.check runs: each names the parameter, and the CLI says which flag ---


def check_classifier(classifier: str, members: int = 1, feature_power: float = 1.0) -> None:
    if classifier not in defaults.CLASSIFIERS:
        raise ValueError(f"classifier={classifier!r} is unknown; choose mlp or linear")
    if members < 1:
        raise ValueError(f"members={members}: the ensemble needs at least one MLP (1 is the paper's classifier)")
    if not 0 < feature_power <= 1:
        raise ValueError(f"feature_power={feature_power}: choose a power in (0, 1]; 1 uses the features as extracted")


def preflight(root: str, backbone: str, weights: str | None, only: str | None, from_stage: str | None) -> None:
    """Check what can be checked before Prefect or MLflow start, so a mistake is answered in a second, not a minute.

    Raises:
        ValueError: Naming the parameter and what to do.
    """
    import os

    from worldnet.features.names import BACKBONES_WITH_WEIGHTS, available_backbones
    from worldnet.storage import is_local, local_path

    for opt, stage in (("only", only), ("from_stage", from_stage)):
        if stage is not None and stage not in STAGES:
            raise ValueError(f"{opt}={stage!r} is not a stage; stages are {', '.join(STAGES)}")
    if backbone not in available_backbones():
        raise ValueError(f"backbone={backbone!r} is unknown; choose one of {', '.join(available_backbones())}")
    if weights is not None:
        if backbone not in BACKBONES_WITH_WEIGHTS:
            raise ValueError(
                f"backbone_weights={weights} is for {', '.join(BACKBONES_WITH_WEIGHTS)}; {backbone!r} ships its own weights: "
                "drop the weights file"
            )
        if not Path(weights).expanduser().is_file():
            raise ValueError(f"backbone_weights={weights} is not a file: give the path of the downloaded .pth file")
        with open(Path(weights).expanduser(), "rb") as fh:
            head = fh.read(4)
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save's zip, or a legacy pickle
            raise ValueError(f"backbone_weights={weights} is not a PyTorch weights file (.pth): give torchvision's {backbone} weights")
    if is_local(root):
        path = local_path(root)
        if path.exists() and not path.is_dir():
            raise ValueError(f"root={root} is a file; give a folder (it is created if absent) or an s3:// URL")
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"root={root} is not writable ({existing} is read-only for this user); choose a folder you can write")


def check_clusters(cluster: str, k: int) -> None:
    from worldnet.clustering import STRATEGIES

    if cluster not in STRATEGIES:
        raise ValueError(f"cluster_strategy={cluster!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if not 0 <= k <= 100_000:
        raise ValueError(f"k={k}: give a number of clusters from 1 to 100000, or 0 to choose it from the data")


def check_data_roots(roots: list[Path], dataset_kind: str) -> None:
    """Every data root exists and, read by its layout, names something worldnet reads."""
    from worldnet.data.ingest import dataset_name, detect_kind

    for r in roots:
        if not r.exists():
            raise ValueError(f"data_root={r} does not exist: point it at a GSV-Cities folder (Dataframes/ + Images/) or a CSV")
        if dataset_kind == "auto":
            try:
                detect_kind(r)
            except FileNotFoundError as exc:
                raise ValueError(f"data_root={exc}") from None
    names = [dataset_name(r) for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"data_root names the datasets {sorted({n for n in names if names.count(n) > 1})} twice: name each once")


def check_finetune(setting: str, backbone: str, stages: int, epochs: int | None) -> None:
    resolve_finetune(setting, backbone, 0, "cpu")
    if not 1 <= stages <= 6:
        raise ValueError(f"finetune_stages={stages}: EfficientNet-Lite has 7 block stages; train 1 to 6")
    if epochs is not None and epochs < 1:
        raise ValueError(f"finetune_epochs={epochs}: train at least 1 epoch")


def check_view(input_height: int | None, flip: str) -> None:
    from worldnet.features.names import View, resolve_flip

    View(input_height, resolve_flip(flip, lambda: True))


def check_engine(engine: str, device: str) -> None:
    """``engine`` against ``device`` (``auto`` resolves per machine later)."""
    from worldnet.features.names import resolve_engine

    resolve_engine(engine, device if device in ("cpu", "cuda") else "cpu")


def check_numbers(seed: int, crossfit_weight_decay: float | None = None) -> None:
    """Parameters that are plain numbers, checked by name before any work starts."""
    import math

    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}: choose a seed from 0 to 4294967295")
    if crossfit_weight_decay is not None and not (math.isfinite(crossfit_weight_decay) and crossfit_weight_decay >= 0):
        raise ValueError(
            f"crossfit_weight_decay={crossfit_weight_decay}: choose a finite number >= 0 (default {defaults.CROSSFIT_WEIGHT_DECAY:g})"
        )


#: What ``cv`` may keep whole in a fold.
GROUPS = ("country", "city")


def check_cv(group: str, folds: int) -> None:
    """Raises ValueError for a grouping or fold count ``cross_validate`` cannot use."""
    if group not in GROUPS:
        raise ValueError(f"group={group!r} keeps no groups whole; choose one of {', '.join(GROUPS)}")
    if not 2 <= folds <= 100:
        raise ValueError(f"folds={folds}: choose from 2 to 100 folds")


__all__ = [
    "FINETUNE_SETTINGS",
    "GROUPS",
    "PIPELINE",
    "STAGES",
    "STAGE_IO",
    "STAGE_PARAMS",
    "PipelineConfig",
    "Stage",
    "check_cv",
    "check_engine",
    "finetune_epochs",
    "resolve_finetune",
    "stage",
    "stage_task",
]
