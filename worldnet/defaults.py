"""Where worldnet keeps things when the user names no place: declared once, read by the library, tasks and CLI."""

#: The catalog root (artifacts, the MLflow store, the model cache) of every command.
ROOT = ".worldnet"
#: The synthetic world that ``make demo`` generates and ``worldnet run`` reads by default.
SYNTHETIC_DATA = f"{ROOT}/data/synthetic"
