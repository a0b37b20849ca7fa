"""Where worldnet keeps things when the user names no place: declared once, read by the library, tasks and CLI."""

#: The catalog root (artifacts, the MLflow store, the model cache) of every command.
ROOT = ".worldnet"
#: The synthetic world that ``make demo`` generates and ``worldnet run`` reads by default.
SYNTHETIC_DATA = f"{ROOT}/data/synthetic"

# The training choices a pipeline run exposes, read by both TrainConfig (the library) and PipelineConfig (a run).
#: The centroid classifier: ``mlp`` (the paper's, on haversine-smoothed targets) or ``linear``.
CLASSIFIER = "mlp"
#: Every centroid classifier there is.
CLASSIFIERS = ("linear", "mlp")
#: MLPs in the classifier's ensemble (1: the paper's one MLP).
MEMBERS = 5
#: Signed power on the classifier's features before standardising (1: as extracted).
FEATURE_POWER = 0.5
#: AdamW weight decay on the crossfit head's MLP weights.
CROSSFIT_WEIGHT_DECAY = 100.0
