"""The ``worldnet`` command line.

``worldnet demo`` generates the synthetic default world (if absent), runs the
whole pipeline under Prefect with MLflow tracking, and prints the paper's table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.env import apply_local_defaults
from flows.guard import start_guard
from tasks.config import STAGES

if TYPE_CHECKING:
    from upath import UPath

    from worldnet.models.predictor import Predictor

apply_local_defaults()

CROSSFIT_DECAY_HELP = (
    "Weight decay on the crossfit head's MLP weights; its training rows are few cities "
    "(default: TrainConfig's, 100; see docs/method.md, section Head modes)."
)

#: ``--engine`` on every command that runs the backbone.
EngineOption = Annotated[
    str, typer.Option(help="Backbone engine: auto (ONNX Runtime on CPU, PyTorch on CUDA), onnx or torch. Features agree either way.")
]

#: ``--input-height`` and ``--flip`` on every command that extracts features (a model keeps what it was trained with).
InputHeightOption = Annotated[
    int | None,
    typer.Option(
        help="Pixels high the backbone sees each photo, width keeping its aspect (default: 300 for EfficientNet-Lite, "
        "the shard frame as it is; 224 is Lite0's ImageNet size, faster but less accurate on Street View)."
    ),
]
MembersOption = Annotated[
    int,
    typer.Option(
        help="MLPs in the classifier's ensemble, their probabilities averaged; as many as a budget of 2M training rows "
        "pays for (all on a few thousand photos, one from ~33k on). 1 is the paper's single MLP, the fastest to train."
    ),
]
FeaturePowerOption = Annotated[
    float,
    typer.Option(
        help="Signed power on each feature before the classifier standardises it, sign(x)|x|^p: 0.5 damps the few channels "
        "that fire on whatever fills the photo (see docs/method.md); 1 uses the features as extracted."
    ),
]
FlipOption = Annotated[
    str,
    typer.Option(
        help="Average each photo's features with its mirror image's: auto (only where every photo drives on the same side "
        "of the road, so the mirror erases no clue; better on real Street View), on or off. Twice the backbone work.",
    ),
]
FinetuneOption = Annotated[
    str,
    typer.Option(
        help="Fine-tune the backbone's last stages on the training photos (the classifier's objective; early stages frozen "
        "and run once): auto (EfficientNet-Lite with 500+ training photos; on a CPU only while 3 epochs fit a budget of "
        "12,000 photo-epochs, about 4.5 minutes on 2 cores: a run up to 4,000 training photos, cv rarely), on or off "
        "(the frozen ImageNet features). See docs/method.md, Fine-tuning.",
    ),
]
FinetuneStagesOption = Annotated[int, typer.Option(help="Fine-tuning: trailing block stages trained, with the head convolution.")]
FinetuneEpochsOption = Annotated[
    int | None,
    typer.Option(
        help="Fine-tuning: epochs, the best validation epoch kept. Default 8; on a CPU fewer (at least 3) where the "
        "training photos times 8 exceed the 12,000 photo-epoch budget.",
        show_default=False,
    ),
]

DATA_ROOT_HELP = (
    "Input dataset: a GSV-Cities folder (Dataframes/ + Images/), a CSV with path,lat,lon[,city,place_id,heading,year,month] "
    "or a folder holding one, a .parquet of GSV-Cities metadata, or a folder of {City}_{lat}_{lon}.jpg. Repeat to train "
    "on several datasets together, each read with its own layout."
)
ClusterOption = Annotated[
    str,
    typer.Option(
        help="Centroids the classifier predicts over: auto (city when each group is compact as a city is, else kmeans), "
        "city (one per group: the paper's) or kmeans (spherical k-means on the training coordinates)."
    ),
]
KOption = Annotated[int, typer.Option(help="Clusters for kmeans; 0 chooses k from the number of training places (about 1.5 per √places).")]

#: The input height ``demo`` uses on the synthetic world (``run`` and ``cv`` default to the backbone's 300, for real photos).
SYNTHETIC_INPUT_HEIGHT = 224

app = typer.Typer(
    help="worldnet: continuous GPS prediction from street-level photos (worldNET).", no_args_is_help=True, add_completion=False
)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write Dataframes/ and Images/ into.")] = Path(".worldnet/data/synthetic"),
    cities: Annotated[
        list[str] | None, typer.Option("--cities", help="City names (repeat the option); default: the 23 GSV-Cities.")
    ] = None,
    extra_cities: Annotated[bool, typer.Option(help="Add Sydney, Tokyo, Cape Town, ... for unseen-city experiments.")] = False,
    per_city: Annotated[int, typer.Option(help="Mean images per city (total = per_city × cities).")] = 100,
    size: Annotated[str, typer.Option(help="Image size WxH.")] = "400x300",
    seed: Annotated[int, typer.Option(help="Sampling seed; same arguments give byte-identical files.")] = 0,
    balanced: Annotated[bool, typer.Option(help="Same number of images per city (default: Eurocentric like GSV-Cities).")] = False,
    preview: Annotated[Path | None, typer.Option(help="Also write a contact sheet PNG (one row per city).")] = None,
) -> None:
    """Generate the synthetic GSV-Cities world (official layout, geography-driven scenes)."""
    from worldnet.data.cities import resolve_cities
    from worldnet.data.synthetic import MAX_SIDE, MIN_SIDE, SynthConfig, contact_sheet, generate

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise _fail(f"--size must look like 400x300, got {size!r}") from None
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise _fail(f"--size {size}: each side must be from {MIN_SIDE} to {MAX_SIDE} px")
    if per_city < 1:
        raise _fail(f"--per-city {per_city}: give at least 1 image per city")
    try:
        resolve_cities(cities, extra=extra_cities)
    except ValueError as exc:
        raise _fail(f"--cities: {exc}") from None
    try:
        s = generate(
            SynthConfig(
                out=out, cities=cities, extra_cities=extra_cities, per_city=per_city, size=(w, h), seed=seed, eurocentric=not balanced
            )
        )
    except _user_errors() as exc:
        raise _user_error(exc) from None
    typer.echo(f"wrote {s.n_images} images of {len(s.images_per_city)} cities to {out} in {s.seconds:.1f}s")
    if preview:
        typer.echo(f"contact sheet: {contact_sheet(out, preview)}")


def _config(
    data_root: Path | list[Path],
    root: Path | str,
    backbone: str,
    weights: str | None,
    dataset_kind: str,
    strict: bool,
    head_mode: str,
    cluster: str,
    k: int,
    seed: int,
    unseen: list[str] | None,
    **more: object,
):
    from tasks.config import PipelineConfig

    roots = [str(p) for p in data_root] if isinstance(data_root, list) else [str(data_root)]
    return PipelineConfig(
        data_root=roots[0] if len(roots) == 1 else roots,
        root=str(root),
        backbone=backbone,
        backbone_weights=weights,
        dataset_kind=dataset_kind,
        strict=strict,
        head_mode=head_mode,
        cluster_strategy=cluster,
        k=k,
        seed=seed,
        unseen_cities=unseen or None,
        **more,  # type: ignore[arg-type]
    )


#: Errors that mean "the input or an option is wrong": one line, exit 2, no traceback (``--debug`` shows it).
def _user_errors() -> tuple[type[BaseException], ...]:
    from tasks.records import RootBusyError
    from tasks.store_check import DamagedStoreError

    # WeightsNotFoundError is a FileNotFoundError; DamagedStoreError (a damaged MLflow store) is a ValueError, named here to say so
    return (ValueError, FileNotFoundError, KeyError, RootBusyError, DamagedStoreError)


def _store_file(root: str) -> Path | None:
    """The SQLite file of the MLflow store a run on ``root`` opens (None when ``MLFLOW_TRACKING_URI`` names another kind).

    As :func:`tasks.tracking.tracking_root` places it, without importing MLflow.
    """
    import os

    from tasks.store_check import sqlite_path
    from worldnet.storage import is_local, local_path

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return sqlite_path(uri)
    return (local_path(root) if is_local(root) else Path(".worldnet")) / "mlflow.db"


def _environment_error(exc: BaseException, root: str, store: Path | None = None) -> tuple[str, int] | None:
    """A failure of the machine or its set-up, not of worldnet or its input: (one line, exit code), else None.

    Matched along the exception's causes by errno, class name or SQLite's message, so that neither SQLAlchemy
    nor botocore need be imported: a full disk (exit 1), missing object-store credentials or a store SQLite
    cannot read (exit 2).
    """
    import errno

    from worldnet.storage import is_local

    where = f"the MLflow store {store}" if store is not None else "the MLflow store"
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not c for c in chain):
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        text = str(e)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            path = e.filename or root
            return f"no space left on the disk holding {path}: free some (or choose another --root) and rerun; finished stages are kept", 1
        if "database or disk is full" in text or (type(e).__name__ == "OperationalError" and "disk is full" in text):
            return f"no space left on the disk holding {where}: free some and rerun; finished stages are kept", 1
        if type(e).__name__ in ("NoCredentialsError", "PartialCredentialsError") or "Unable to locate credentials" in text:
            url = root if not is_local(root) else "the s3:// paths given"
            return f"no credentials for {url}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile (AWS_PROFILE)", 2
        if "database disk image is malformed" in text or "file is not a database" in text:
            aside = f" (mv {store} {store}.bad)" if store is not None else ""
            return f"{where} is damaged (SQLite cannot read it): move it aside{aside} and rerun; the catalog's artifacts are kept", 2
    return None


def _fail_environment(exc: Exception, root: str, store: Path | None, debug: bool) -> typer.Exit:
    """``exc`` as its one line and exit code if it is an environment failure (:func:`_environment_error`); else re-raised."""
    found = None if debug else _environment_error(exc, root, store)
    if found is None:
        raise exc
    typer.echo(f"error: {found[0]}", err=True)
    return typer.Exit(found[1])


class _HideUserErrorTracebacks(logging.Filter):
    """Drop Prefect's log records of a user error: the CLI prints that error as one line (``--debug`` keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, _user_errors()) or _environment_error(exc, ".") is not None):
            return False
        # "Finished in state Failed(...)": the same error again; the CLI prints it (and a crash still has its traceback)
        return not (record.levelno >= logging.ERROR and "Finished in state Failed" in record.getMessage())


def _quiet_prefect_user_errors() -> None:
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(_HideUserErrorTracebacks())
    for handler in logging.getLogger("prefect").handlers + logging.getLogger().handlers:
        handler.addFilter(_HideUserErrorTracebacks())


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _user_error(exc: BaseException, debug: bool = False) -> typer.Exit:
    """A user error as its first line (exit 2); ``--debug`` re-raises it with its traceback."""
    if debug:
        raise exc
    text = str(exc).strip()
    return _fail(text.splitlines()[0] if text else type(exc).__name__)


def _check_classifier(classifier: str, members: int = 1, feature_power: float = 1.0) -> None:
    if classifier not in ("mlp", "linear"):
        raise ValueError(f"--classifier {classifier!r} is unknown; choose mlp or linear")
    if members < 1:
        raise ValueError(f"--members {members}: the ensemble needs at least one MLP (1 is the paper's classifier)")
    if not 0 < feature_power <= 1:
        raise ValueError(f"--feature-power {feature_power}: choose a power in (0, 1]; 1 uses the features as extracted")


def _preflight(root: str, backbone: str, weights: str | None, only: str | None, from_stage: str | None) -> None:
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


def _check_clusters(cluster: str, k: int) -> None:
    from worldnet.clustering import STRATEGIES

    if cluster not in STRATEGIES:
        raise ValueError(f"--cluster {cluster!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if not 0 <= k <= 100_000:
        raise ValueError(f"--k {k}: give a number of clusters from 1 to 100000, or 0 to choose it from the data")


def _check_data_roots(roots: list[Path], dataset_kind: str) -> None:
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


def _check_finetune(setting: str, backbone: str, stages: int, epochs: int | None) -> None:
    from tasks.config import resolve_finetune

    resolve_finetune(setting, backbone, 0, "cpu")
    if not 1 <= stages <= 6:
        raise ValueError(f"--finetune-stages {stages}: EfficientNet-Lite has 7 block stages; train 1 to 6")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--finetune-epochs {epochs}: train at least 1 epoch")


def _check_view(input_height: int | None, flip: str) -> None:
    from worldnet.features.names import View, resolve_flip

    View(input_height, resolve_flip(flip, lambda: True))


def _check_engine(engine: str, device: str) -> None:
    """``--engine`` against ``--device`` (``auto`` resolves per machine later)."""
    from worldnet.features.names import resolve_engine

    resolve_engine(engine, device if device in ("cpu", "cuda") else "cpu")


def _parse_size(size: str) -> tuple[int, int]:
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


def _check_numbers(seed: int, crossfit_weight_decay: float | None = None, folds: int | None = None) -> None:
    """Options that are plain numbers, checked by name before any work starts."""
    import math

    if not 0 <= seed < 2**32:
        raise ValueError(f"--seed {seed}: choose a seed from 0 to 4294967295")
    if crossfit_weight_decay is not None and not (math.isfinite(crossfit_weight_decay) and crossfit_weight_decay >= 0):
        raise ValueError(f"--crossfit-weight-decay {crossfit_weight_decay}: choose a finite number >= 0 (default 100)")
    if folds is not None and not 2 <= folds <= 100:
        raise ValueError(f"--folds {folds}: choose from 2 to 100 folds")


def _print_results(result: dict, root: Path) -> None:
    """The paper's tables, where the report and maps are, and how each stage went (``root``: the MLflow folder)."""
    if result.get("input"):
        typer.echo(result["input"])
    summary = result.get("evaluate") or {}
    titles = {"seen": "Figure 4a: unseen images of seen cities", "unseen": "Figure 4b: unseen images of unseen cities"}
    for proto, s in summary.items():
        typer.echo(f"\n{titles.get(proto, proto)}\n{s['table']}")
    rep = result.get("report") or {}
    if rep:
        typer.echo(f"\nreport: {rep.get('report')}\nmaps:   {rep.get('seen_map')}, {rep.get('unseen_map')}")
    if "register" in result:
        typer.echo(f"registry: worldnet v{result['register'].get('version')} {result['register'].get('decision')}")
    from tasks.tracking import user_tracking_uri

    uri = user_tracking_uri() or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    typer.echo(f"MLflow UI: mlflow ui --backend-store-uri {uri}")
    t = result.get("timings", {})
    states = result.get("states", {})
    if t:
        typer.echo(
            "stages: "
            + ", ".join(f"{k} {v:.1f}s" + (f" ({states[k]})" if states.get(k) not in (None, "Completed") else "") for k, v in t.items())
        )
    if result.get("restored"):
        typer.echo("restored from MLflow: " + ", ".join(result["restored"]))


@app.command()
def run(
    data_root: Annotated[
        list[Path] | None,
        typer.Option(
            help=DATA_ROOT_HELP + " Default: the synthetic world (.worldnet/data/synthetic); with --only or --from, "
            "the data root the catalog root's records name.",
            metavar="PATH",
        ),
    ] = None,
    root: Annotated[
        str,
        typer.Option(
            help="Catalog root: a folder, or an fsspec URL (s3://bucket/worldnet, gs://...) that Dask workers share. "
            "The MLflow store lives here when it is a folder, else in ./.worldnet (or MLFLOW_TRACKING_URI)."
        ),
    ] = ".worldnet",
    only: Annotated[str | None, typer.Option(help="Run just this stage, reusing upstream artifacts.")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Run from this stage to the end.")] = None,
    dataset_kind: Annotated[
        str, typer.Option(help="auto (a folder with Dataframes/ is gsv_cities, a .csv is csv) | gsv_cities | gsv_metadata | flat | csv")
    ] = "auto",
    backbone: Annotated[str, typer.Option(help="Feature backbone (efficientnet_lite0, vgg19, tiny_random, ...).")] = "efficientnet_lite0",
    weights: Annotated[str | None, typer.Option(help="Weights file for backbones you supply (vgg19).")] = None,
    head_mode: Annotated[
        str,
        typer.Option(
            help="Head reported as worldNET: auto (crossfit on seen cities, whose folds hold out places; in_sample on unseen "
            "cities; see docs/method.md), in_sample (the paper's) or crossfit. Both heads are always trained and printed."
        ),
    ] = "auto",
    crossfit_weight_decay: Annotated[float | None, typer.Option(help=CROSSFIT_DECAY_HELP)] = None,
    cluster: ClusterOption = "auto",
    k: KOption = 0,
    unseen: Annotated[list[str] | None, typer.Option(help="Cities held out for the unseen protocol (repeat); default 5 by seed.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail if any input row is rejected (same report).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for every random choice.")] = 0,
    device: Annotated[str, typer.Option(help="Feature extraction device: auto (CUDA if available) | cpu | cuda.")] = "auto",
    engine: EngineOption = "auto",
    input_height: InputHeightOption = None,
    flip: FlipOption = "auto",
    finetune: FinetuneOption = "auto",
    finetune_stages: FinetuneStagesOption = 2,
    finetune_epochs: FinetuneEpochsOption = None,
    task_runner: Annotated[
        str, typer.Option(help="Where per-shard tasks run: threads (this process) or dask (a Dask cluster via prefect-dask).")
    ] = "threads",
    dask_address: Annotated[str | None, typer.Option(help="With --task-runner dask: an existing scheduler, e.g. tcp://HOST:8786.")] = None,
    dask_workers: Annotated[
        int | None, typer.Option(help="With --task-runner dask and no address: worker processes of a LocalCluster (default: cores).")
    ] = None,
    debias: Annotated[
        str,
        typer.Option(
            help="De-biasing: balance_continents (no continent over --debias-max-share; a one-continent dataset is kept whole), "
            "cap_per_city (at most --debias-cap photos per city) or none."
        ),
    ] = "balance_continents",
    debias_cap: Annotated[int, typer.Option(help="cap_per_city: photos kept per city.")] = 100,
    debias_max_share: Annotated[float, typer.Option(help="balance_continents: the largest share any continent may keep.")] = 0.45,
    debias_max_drop: Annotated[
        float, typer.Option(help="Stop with an error if de-biasing would drop more than this share of the photos (1: allow anything).")
    ] = 0.5,
    image_size: Annotated[
        str, typer.Option(help="Shard frame WxH; auto keeps the photos' own aspect at 300 px high (a 2:1 panorama stays whole).")
    ] = "auto",
    classifier: Annotated[
        str, typer.Option(help="Centroid classifier: mlp (the paper's, on haversine-smoothed targets) or linear (fastest at scale).")
    ] = "mlp",
    members: MembersOption = 5,
    feature_power: FeaturePowerOption = 0.5,
    wait_lock: Annotated[
        float, typer.Option(help="Seconds to wait when another run holds the catalog root (default: refuse at once).")
    ] = 0.0,
    debug: Annotated[bool, typer.Option(help="Show the full traceback of an error.")] = False,
) -> None:
    """Run the pipeline (or one stage of it) under Prefect with MLflow tracking.

    Stages: {stages}. The shard and extract_features stages map one task per shard, onto Dask workers with
    --task-runner dask.
    """
    from worldnet.data.debias import check_debias_options
    from worldnet.head_modes import resolve_head_mode

    width, height = _parse_size(image_size)
    try:
        check_debias_options(debias, cap=debias_cap, max_share=debias_max_share, max_drop=debias_max_drop)
        resolve_head_mode(head_mode, "seen")
        _preflight(root, backbone, weights, only, from_stage)
        _check_engine(engine, device)
        _check_view(input_height, flip)
        _check_finetune(finetune, backbone, finetune_stages, finetune_epochs)
        _check_classifier(classifier, members, feature_power)
        store = _store_file(root)
        if store is not None:
            from tasks.store_check import check_sqlite_store

            check_sqlite_store(store)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    data_roots = data_root or [Path(".worldnet/data/synthetic")]
    try:
        _check_clusters(cluster, k)
        _check_numbers(seed, crossfit_weight_decay)
        if only is None and from_stage is None:
            _check_data_roots(data_roots, dataset_kind)
    except ValueError as exc:
        raise _fail(str(exc)) from None

    from flows.pipeline import run_pipeline
    from flows.runners import make_task_runner

    try:
        runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    cfg = _config(
        data_roots,
        root,
        backbone,
        weights,
        dataset_kind,
        strict,
        head_mode,
        cluster,
        k,
        seed,
        unseen,
        debias_strategy=debias,
        debias_cap=debias_cap,
        debias_max_share=debias_max_share,
        debias_max_drop=debias_max_drop,
        image_width=width,
        image_height=height,
        classifier=classifier,
        members=members,
        feature_power=feature_power,
        input_height=input_height,
        flip=flip,
        finetune=finetune,
        finetune_stages=finetune_stages,
        finetune_epochs=finetune_epochs,
    )
    cfg.device = device
    cfg.engine = engine
    if crossfit_weight_decay is not None:
        cfg.crossfit_weight_decay = crossfit_weight_decay
    if not debug:
        _quiet_prefect_user_errors()
    start_guard()
    try:
        if data_root is None and (only is not None or from_stage is not None):
            # a stage of a finished run: the data its ingest record names, not the default dataset
            from tasks.records import recorded_data_root

            recorded = recorded_data_root(root)
            if recorded is not None:
                cfg.data_root = recorded
                shown = recorded if isinstance(recorded, str) else ", ".join(recorded)
                typer.echo(f"data root: {shown} (as the ingest record under {root} says; --data-root to change it)")
        result = run_pipeline(cfg, task_runner=runner, from_stage=from_stage, only=only, wait_lock=wait_lock)
    except _user_errors() as exc:
        raise _user_error(exc, debug) from None
    except Exception as exc:  # noqa: BLE001 - a full disk or missing credentials is one line; anything else re-raised
        raise _fail_environment(exc, root, store, debug) from None
    _print_results(result, cfg.tracking_root())


run.__doc__ = (run.__doc__ or "").replace("{stages}", ", ".join(STAGES))  # typer reads it when the CLI starts


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where the synthetic data, artifacts and MLflow store go.")] = Path(".worldnet"),
    backbone: Annotated[str, typer.Option(help="Feature backbone.")] = "efficientnet_lite0",
    per_city: Annotated[int, typer.Option(help="Mean synthetic images per city.")] = 100,
) -> None:
    """Generate the synthetic world if absent, run the full pipeline, print the results."""
    from flows.pipeline import pipeline
    from worldnet.data.synthetic import SynthConfig, generate

    t0 = time.perf_counter()
    data = root / "data" / "synthetic"
    if not (data / "Dataframes").is_dir():
        typer.echo(f"generating the synthetic GSV-Cities world in {data} ...")
        generate(SynthConfig(out=data, per_city=per_city))
    # the rendered world's flat shapes and per-image noise read best at Lite0's ImageNet height (seen cities 290 km at
    # 224 px against 476 at 300, docs/method.md); real Street View reads best at the run default, 300
    cfg = _config(data, root, backbone, None, "gsv_cities", False, "auto", "city", 23, 0, None, input_height=SYNTHETIC_INPUT_HEIGHT)
    _quiet_prefect_user_errors()
    start_guard()
    try:
        result = pipeline(cfg)
    except _user_errors() as exc:
        raise _user_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a full disk is one line; anything else re-raised
        raise _fail_environment(exc, str(root), _store_file(str(root)), False) from None
    _print_results(result, root)
    stage_total = sum(result.get("timings", {}).values())
    total = time.perf_counter() - t0
    typer.echo(f"total {total:.0f}s; in stages {stage_total:.0f}s")


@app.command()
def cv(
    data_root: Annotated[list[Path], typer.Option(help=DATA_ROOT_HELP, metavar="PATH")],
    dataset_kind: Annotated[
        str, typer.Option(help="auto (a folder with Dataframes/ is gsv_cities, a .csv is csv) | gsv_cities | flat | csv")
    ] = "auto",
    root: Annotated[
        Path, typer.Option(help="Catalog root: shared with `worldnet run`, whose recorded shards and features cv reuses (and the reverse).")
    ] = Path(".worldnet"),
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group: Annotated[str, typer.Option(help="Keep each country or city in one fold: country | city.")] = "country",
    backbone: Annotated[str, typer.Option(help="Feature backbone.")] = "efficientnet_lite0",
    weights: Annotated[str | None, typer.Option(help="Weights file for backbones you supply (vgg19).")] = None,
    cluster: ClusterOption = "auto",
    k: KOption = 0,
    head_mode: Annotated[
        str,
        typer.Option(
            help="Head reported as worldNET: crossfit (default here: every fold's test places are unseen, which is what the "
            "crossfit head is trained for) or in_sample (the paper's). Both rows are printed."
        ),
    ] = "crossfit",
    crossfit_weight_decay: Annotated[float | None, typer.Option(help=CROSSFIT_DECAY_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed for folds and training.")] = 0,
    image_size: Annotated[str, typer.Option(help="Shard frame WxH, or auto (the photos' own aspect at 300 px high).")] = "auto",
    classifier: Annotated[str, typer.Option(help="Centroid classifier: mlp (default) or linear.")] = "mlp",
    members: MembersOption = 5,
    feature_power: FeaturePowerOption = 0.5,
    engine: EngineOption = "auto",
    input_height: InputHeightOption = None,
    flip: FlipOption = "auto",
    finetune: FinetuneOption = "auto",
    finetune_stages: FinetuneStagesOption = 2,
    finetune_epochs: FinetuneEpochsOption = None,
    debug: Annotated[bool, typer.Option(help="Show the full traceback of an error.")] = False,
) -> None:
    """Grouped k-fold evaluation of every model on a small dataset; prints the paper's table.

    Images of each fold's countries (or cities) are never seen in training, so
    this is the unseen-places protocol for datasets too small for one split.
    With fine-tuning, each fold fine-tunes its own backbone on its training
    photos only (the frozen stages' activations are computed once for all folds).
    """
    from worldnet.head_modes import resolve_head_mode

    # every option is checked before the heavy imports, so a mistake is answered in a second
    if group not in ("country", "city"):
        raise typer.BadParameter("--group must be country or city")
    try:
        _check_engine(engine, "cpu")
        _check_view(input_height, flip)
        _check_finetune(finetune, backbone, finetune_stages, finetune_epochs)
        _preflight(str(root), backbone, weights, None, None)
        _check_classifier(classifier, members, feature_power)
        resolve_head_mode(head_mode, "unseen")
        width, height = _parse_size(image_size)
        _check_clusters(cluster, k)
        _check_numbers(seed, crossfit_weight_decay, folds)
        _check_data_roots(data_root, dataset_kind)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    from flows.cv import cv_flow
    from worldnet.report import markdown_table, paper_table

    cfg = _config(
        data_root,
        root,
        backbone,
        weights,
        dataset_kind,
        False,
        head_mode,
        cluster,
        k,
        seed,
        None,
        image_width=width,
        image_height=height,
        classifier=classifier,
        members=members,
        feature_power=feature_power,
        input_height=input_height,
        flip=flip,
        finetune=finetune,
        finetune_stages=finetune_stages,
        finetune_epochs=finetune_epochs,
        engine=engine,
    )
    if crossfit_weight_decay is not None:
        cfg.crossfit_weight_decay = crossfit_weight_decay
    if not debug:
        _quiet_prefect_user_errors()
    start_guard()
    try:
        res = cv_flow(cfg, group=group, folds=folds)
    except _user_errors() as exc:
        raise _user_error(exc, debug) from None
    except Exception as exc:  # noqa: BLE001 - a full disk is one line; anything else re-raised
        raise _fail_environment(exc, str(root), _store_file(str(root)), debug) from None
    if res.get("input"):
        typer.echo(res["input"])
    typer.echo(f"\n{folds}-fold cross-validation grouped by {group}: {res['images']} images, {res['groups']} {group} groups")
    typer.echo(paper_table(res["metrics"]))
    typer.echo("\n" + markdown_table(res["metrics"]))


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Photo files to geolocate.")],
    model: Annotated[
        str, typer.Option(help="A registry URI (models:/worldnet@champion) or a worldnet.pt file.")
    ] = "models:/worldnet@champion",
    root: Annotated[Path, typer.Option(help="Catalog root holding the MLflow store.")] = Path(".worldnet"),
    top_k: Annotated[int, typer.Option(help="How many clusters to list.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of text.")] = False,
    engine: EngineOption = "auto",
    place: Annotated[
        bool,
        typer.Option(
            "--place",
            help="The photos are views of one place: one answer from their combined distributions over the clusters "
            "(a normalised geometric mean), not one per photo. An unreadable photo is reported and left out.",
        ),
    ] = False,
) -> None:
    """Predict lat, lon, country and continent for photos, with the top clusters; with --place, once for all of them."""
    from worldnet.models.predictor import ImageInputError

    if top_k < 1:
        raise _fail(f"--top-k {top_k}: list at least one cluster")
    try:
        _check_engine(engine, "cpu")
        predictor, _ = _load_predictor(model, root, engine)
    except _user_errors() as exc:
        raise _user_error(exc) from None
    if place:
        answer = predictor.predict_place([str(img) for img in images], top_k=top_k)
        for v in answer.views:
            if v.status != "ok":
                typer.echo(f"error: {v.error if v.status == 'unreadable' else f'{v.name}: {v.error}'}", err=True)
        if answer.prediction is None:
            typer.echo(f"error: {answer.error}", err=True)
        elif as_json:
            typer.echo(json.dumps(answer.as_dict()))
        else:
            p, used = answer.prediction, answer.used
            tops = ", ".join(f"{n} {q:.2f}" for n, q in p.top_clusters)
            typer.echo(
                f"place ({len(used)} of {len(answer.views)} photos: {', '.join(used)}): "
                f"{p.lat:.4f}, {p.lon:.4f}  {p.country} {p.continent}  top: {tops}"
            )
        raise typer.Exit(0 if len(answer.used) == len(answer.views) else 1)
    status = 0
    for img in images:
        try:
            p = predictor.predict_paths([str(img)], top_k=top_k)[0]
        except ImageInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            status = 1
            continue
        if as_json:
            typer.echo(json.dumps(p.as_dict()))
        else:
            tops = ", ".join(f"{n} {q:.2f}" for n, q in p.top_clusters)
            typer.echo(f"{p.path}: {p.lat:.4f}, {p.lon:.4f}  {p.country} {p.continent}  top: {tops}")
    raise typer.Exit(status)


def _load_predictor(model: str, root: Path, engine: str) -> tuple[Predictor, str]:
    """The predictor that answers ``predict`` and ``serve``, and its label (``worldnet v3 (@champion)``, or the file's name).

    ``auto`` and ``onnx``: the backbone's graph in ONNX Runtime, the classifier and head in numpy, and a registry URI
    resolved from the catalog's ``model_cache`` when the store still names the same bytes; neither PyTorch, MLflow nor
    Prefect is imported (:mod:`worldnet.models.fast`, :mod:`tasks.model_cache`). ``torch``: the path before, all PyTorch,
    the registry through MLflow.
    """
    from worldnet.catalog import Catalog
    from worldnet.models.fast import load_predictor

    graphs = Catalog.from_yaml(root).path("onnx_graphs")
    if engine == "torch":
        from worldnet.models.predictor import Predictor

        if model.startswith("models:/"):
            from tasks.tracking import registry_label, registry_model_file

            path, label = registry_model_file(model, root), registry_label(model)
        else:
            path, label = Path(model), Path(model).name
        return Predictor.load(path, engine="torch", graphs_dir=graphs), label
    from tasks.model_cache import cache_dir, resolve

    if model.startswith("models:/"):
        found = resolve(model, root)
        dirs: list[Path | UPath] = [found.graphs, graphs] if found.graphs is not None else [graphs]
        return load_predictor(found.model, engine=engine, graph_dirs=dirs, twin_dir=found.model.parent), found.label
    return load_predictor(model, engine=engine, graph_dirs=[graphs], twin_dir=cache_dir(root) / "twins"), Path(model).name


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="What to serve: models:/worldnet@champion (default), models:/worldnet/3, or a worldnet .pt file.")
    ] = "models:/worldnet@champion",
    root: Annotated[Path, typer.Option(help="Catalog root holding the MLflow store (and the ONNX graph cache).")] = Path(".worldnet"),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for other hosts.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo accepted, MB.")] = 20.0,
    max_photos: Annotated[int, typer.Option(help="Most photos in one request.")] = 16,
    max_request_megapixels: Annotated[
        float,
        typer.Option(help="Most megapixels one request may decode, all its photos together (JPEGs count at their draft scale)."),
    ] = 100.0,
    engine: EngineOption = "auto",
    debug: Annotated[bool, typer.Option(help="Show the full traceback of an error.")] = False,
) -> None:
    """Serve a model over HTTP: POST /predict (multipart photos in 'file'), GET / (a page with a map), GET /health.

    The model is loaded once. Try it:  curl -F file=@photo.jpg http://127.0.0.1:8000/predict
    """
    import math

    from flows.serve import ServeLimits, serve

    try:
        _check_engine(engine, "cpu")
        if not 0 < port < 65536:
            raise ValueError(f"--port {port} is not a port; choose 1-65535")
        if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
            raise ValueError(f"--max-upload-mb {max_upload_mb}: choose a finite number of MB > 0 (default 20)")
        if max_photos < 1:
            raise ValueError(f"--max-photos {max_photos}: accept at least 1 photo per request")
        if not (math.isfinite(max_request_megapixels) and max_request_megapixels > 0):
            raise ValueError(f"--max-request-megapixels {max_request_megapixels}: choose a finite number of megapixels > 0 (default 100)")
        _check_port(host, port)  # before the model loads: a busy port is answered in a second
        predictor, label = _load_predictor(model, root, engine)
    except _user_errors() as exc:
        raise _user_error(exc, debug) from None
    limits = ServeLimits(
        max_photo_bytes=int(max_upload_mb * 2**20), max_photos=max_photos, max_request_pixels=max(1, int(max_request_megapixels * 1e6))
    )
    typer.echo(f"serving {label} ({predictor.engine}) on http://{host}:{port}/  (POST /predict, GET /health; Ctrl-C stops)")
    serve(predictor, label, host=host, port=port, limits=limits)


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` and let it go, as the server will bind it (``SO_REUSEADDR``, every address ``host`` names).

    Raises:
        ValueError: The port is in use, needs privileges, or ``host`` is no address of this machine.
    """
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ValueError(f"--host {host} is not an address: give one such as 127.0.0.1, or 0.0.0.0 for other hosts") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's server does: IPv6 apart from IPv4
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ValueError(f"port {port} on {host} is in use: choose another --port") from None
                if exc.errno == errno.EACCES:
                    raise ValueError(f"port {port} on {host} needs privileges: choose a --port above 1023") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ValueError(f"--host {host} is not an address of this machine: try 127.0.0.1 or 0.0.0.0") from None
                raise ValueError(f"cannot listen on port {port} on {host} ({exc.strerror}): choose another --port or --host") from None


@app.command("predict-batch")
def predict_batch_cmd(
    photos: Annotated[
        Path, typer.Argument(help="Folder of photos (searched recursively: .jpg .jpeg .png .webp .avif .gif .bmp .tif; others are listed).")
    ],
    model: Annotated[str, typer.Option(help="A registry URI or a worldnet .pt file (path or fsspec URL).")] = "models:/worldnet@champion",
    root: Annotated[str, typer.Option(help="Catalog root (folder or fsspec URL the workers share); holds the MLflow store.")] = ".worldnet",
    name: Annotated[
        str | None,
        typer.Option(
            help="Batch name: outputs go to {root}/06_predict/{name}, rebuilt for the photos given "
            "(default: the folder's name and a hash of its path)."
        ),
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Photos per shard, i.e. per task.")] = 256,
    task_runner: Annotated[str, typer.Option(help="threads (this process) or dask.")] = "threads",
    dask_address: Annotated[str | None, typer.Option(help="With --task-runner dask: an existing scheduler.")] = None,
    dask_workers: Annotated[int | None, typer.Option(help="With --task-runner dask and no address: LocalCluster workers.")] = None,
    engine: EngineOption = "auto",
    by_folder: Annotated[
        bool,
        typer.Option(
            "--by-folder",
            help="Each immediate sub-folder of PHOTOS is one place, answered once from its photos (places.parquet); "
            "photos directly in PHOTOS keep one answer each.",
        ),
    ] = False,
    places: Annotated[
        Path | None,
        typer.Option(help="A CSV with columns path,place (paths relative to PHOTOS): each place answered once (places.parquet)."),
    ] = None,
) -> None:
    """Geolocate a whole folder of photos, one task per shard (on Dask if asked); writes a Parquet table.

    Photos that fail to decode are listed with the reason, and the rest are predicted. With --by-folder or --places,
    several photos of one place also get one answer, from their combined distributions over the clusters.
    """
    import re

    from flows.predict import default_batch_name, place_assignment, predict_batch
    from flows.runners import make_task_runner

    if shard_size < 1:
        raise _fail(f"--shard-size {shard_size}: a shard holds at least one photo")
    batch = name or default_batch_name(photos)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", batch) or ".." in batch:
        raise _fail(f"--name {batch!r} must be a plain name (letters, digits, '.', '_', '-'): outputs go to {{root}}/06_predict/NAME")

    try:
        runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:  # before Prefect starts: a wrong folder or model file is answered in a second
        from worldnet.models.batch import photo_table
        from worldnet.models.predictor import load_worldnet
        from worldnet.storage import is_local

        _check_engine(engine, "cpu")
        if not model.startswith("models:/") and is_local(model):
            load_worldnet(model)
        place_assignment(str(photos), photo_table(photos)[0], by_folder, str(places) if places else None)
    except _user_errors() as exc:
        raise _user_error(exc) from None
    _quiet_prefect_user_errors()
    start_guard()
    try:
        out = predict_batch.with_options(task_runner=runner)(
            str(photos), batch, model, root, shard_size, engine=engine, by_folder=by_folder, places=str(places) if places else None
        )
    except _user_errors() as exc:
        raise _user_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a full disk or missing credentials is one line; anything else re-raised
        raise _fail_environment(exc, root, _store_file(root), False) from None
    typer.echo(f"predicted {out['predicted']} of {out['photos']} photos -> {out['predictions']}")
    if "places_file" in out:
        empty = f", {out['places_without_views']} with no readable photo" if out["places_without_views"] else ""
        typer.echo(f"answered {out['places']} places{empty}; {out['unplaced']} photos in no place -> {out['places_file']}")
    if out["rejects"]:
        counts = ", ".join(f"{n} {r}" for r, n in out["reject_counts"].items())
        typer.echo(f"{out['rejects']} files not predicted ({counts}); see {out['rejects_file']}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
