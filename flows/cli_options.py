"""The options several ``worldnet`` commands share, each declared once with its help."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tasks.config import PipelineConfig

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

RootOption = Annotated[
    str,
    typer.Option(
        help="Catalog root: a folder, or an fsspec URL (s3://bucket/worldnet, gs://...) that Dask workers share. "
        "The MLflow store lives here when it is a folder, else in ./.worldnet (or MLFLOW_TRACKING_URI). run and cv "
        "on one root share their recorded shards and features."
    ),
]
DatasetKindOption = Annotated[
    str,
    typer.Option(
        help="auto (a folder with Dataframes/ is gsv_cities, a .csv or a folder of one is csv) | gsv_cities | gsv_metadata | flat | csv"
    ),
]
BackboneOption = Annotated[str, typer.Option(help="Feature backbone (efficientnet_lite0, vgg19, tiny_random, ...).")]
WeightsOption = Annotated[str | None, typer.Option(help="Weights file for backbones you supply (vgg19).")]
CrossfitDecayOption = Annotated[float | None, typer.Option(help=CROSSFIT_DECAY_HELP, show_default=False)]
SeedOption = Annotated[int, typer.Option(help="Seed for every random choice (splits, folds, training).")]
ImageSizeOption = Annotated[
    str, typer.Option(help="Shard frame WxH; auto keeps the photos' own aspect at 300 px high (a 2:1 panorama stays whole).")
]
ClassifierOption = Annotated[
    str, typer.Option(help="Centroid classifier: mlp (the paper's, on haversine-smoothed targets) or linear (fastest at scale).")
]
DebugOption = Annotated[bool, typer.Option(help="Show the full traceback of an error.")]

#: A command's option → the PipelineConfig field it sets, where the two names differ.
FIELD_OF_OPTION = {"cluster": "cluster_strategy", "weights": "backbone_weights", "debias": "debias_strategy", "unseen": "unseen_cities"}


def pipeline_config(options: dict[str, Any]) -> PipelineConfig:
    """The PipelineConfig a command's options (its parameters by name) describe: the CLI only maps flags to fields.

    Options that are no field (``debug``, ``only``, ...) are left out, and so are options left unset (``None``), whose
    field keeps the one default PipelineConfig declares. ``image_size`` becomes ``image_width``/``image_height``.
    """
    from dataclasses import fields

    from flows.cli_checks import parse_size
    from tasks.config import PipelineConfig

    names = {f.name for f in fields(PipelineConfig)}
    kw: dict[str, Any] = {}
    for option, value in options.items():
        name = FIELD_OF_OPTION.get(option, option)
        if name in names and value is not None:
            kw[name] = value
    if "data_root" in kw:
        roots = [str(r) for r in kw["data_root"]] if isinstance(kw["data_root"], list) else [str(kw["data_root"])]
        kw["data_root"] = roots[0] if len(roots) == 1 else roots
    kw["root"] = str(kw.get("root", PipelineConfig.root))
    if kw.get("unseen_cities") == []:
        del kw["unseen_cities"]
    if "image_size" in options:
        kw["image_width"], kw["image_height"] = parse_size(options["image_size"])
    return PipelineConfig(**kw)
