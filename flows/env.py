"""Local, quiet defaults for Prefect and MLflow, applied before either is imported.

Shared by the CLI and the tests so a bare ``pytest`` or ``worldnet`` behaves
like ``make``. Only fills variables the user has not set.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the first ephemeral start takes ~20 s here; the default 20 s timeout is too tight
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow's INFO lines and download bars ("Validating input example", "Created version") are noise in a run's output
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DO_NOT_TRACK": "true",
    "MPLBACKEND": "Agg",
    # Dask's scheduler and workers log every start/stop at INFO
    "DASK_LOGGING__DISTRIBUTED": "warning",
    "DASK_DISTRIBUTED__WORKER__DAEMON": "false",
    # one malloc arena, so models run from task threads reuse their buffers (see worldnet.features.runtime);
    # child processes (Dask LocalCluster workers) read it at start-up
    "MALLOC_ARENA_MAX": "1",
}


def apply_local_defaults() -> None:
    """Set each of :data:`DEFAULTS` unless already set in the environment, and one malloc arena for this process."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get("MLFLOW_LOGGING_LEVEL") == "WARNING":  # also when mlflow was imported before the variable was set
        import logging

        logging.getLogger("mlflow").setLevel(logging.WARNING)
    if os.environ.get("MALLOC_ARENA_MAX") == "1":
        from worldnet.features.runtime import single_malloc_arena

        single_malloc_arena()
