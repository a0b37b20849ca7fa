"""Log the predictor as an MLflow pyfunc model, register it, and manage aliases.

Every pipeline run registers a new version of ``worldnet`` and points the
``challenger`` alias at it; it takes ``champion`` only if it beats the current
champion's worldNET mean km on both protocols of the same split (same
``splits.parquet`` hash), or there is no champion yet. The decision and both
sets of figures are logged.
"""

from __future__ import annotations

import base64
import io
import tempfile
from contextlib import ExitStack, redirect_stderr
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from prefect import task

from tasks.config import PipelineConfig
from tasks.lineage import stage_run
from tasks.tracking import MODEL_NAME, SHA256_TAG, file_hash
from worldnet.features.engine import OnnxBackbone, build_engine
from worldnet.head_modes import resolve_head_mode
from worldnet.models.fast import twin_file
from worldnet.models.predictor import finetuned_weights, load_worldnet
from worldnet.storage import local_copy

PIP_REQUIREMENTS = [
    "worldnet",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "timm",
    "onnxruntime>=1.20,<2",
    "polars",
    "shapely>=2",
    "geopandas>=1",
]

#: The model's code, logged as code (MLflow's models from code): loading it unpickles nothing.
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


def model_signature() -> ModelSignature:
    """Photos (base64, or a path where the loader allows it) in; one answer per row out; ``top_k`` as a parameter."""
    inputs = Schema([ColSpec("string", "photo", required=False), ColSpec("string", "path", required=False)])
    outputs = Schema(
        [
            ColSpec("string", "status"),
            ColSpec("string", "error"),
            ColSpec("double", "lat", required=False),
            ColSpec("double", "lon", required=False),
            ColSpec("string", "country", required=False),
            ColSpec("string", "continent", required=False),
            ColSpec("string", "top_clusters", required=False),
            ColSpec("double", "snapped_km", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("top_k", "long", 3)]))


def example_photo() -> str:
    """A small grey street-less photo, base64: the logged input example (its answer is the logged output example)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), (128, 128, 128)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def _current_champion_scores(client: MlflowClient) -> dict[str, Any] | None:
    try:
        mv = client.get_model_version_by_alias(MODEL_NAME, "champion")
    except mlflow.exceptions.MlflowException:
        return None
    if not mv.run_id:
        return None
    run = client.get_run(mv.run_id)
    m = run.data.metrics
    if "seen_mean_km" not in m or "unseen_mean_km" not in m:
        return None
    return {"seen": m["seen_mean_km"], "unseen": m["unseen_mean_km"], "split": run.data.tags.get("split_sha256", "")}


def register_model_file(model: Path, graph: Path | None = None, twin: Path | None = None) -> str:
    """Log a worldnet ``.pt`` as the pyfunc model in the active run and register it as a new version of ``worldnet``.

    Its ONNX graph and numpy twin ship beside it (artifacts ``onnx_graphs`` and
    ``worldnet_twin``), so serving needs no export and an answer needs no
    PyTorch (:mod:`tasks.model_cache`); the version is tagged with the ``.pt``'s
    sha256 (:data:`~tasks.tracking.SHA256_TAG`), checked at every load. Returns the version.
    """
    artifacts = {"worldnet": str(model)}
    if graph is not None:
        artifacts["onnx_graphs"] = str(graph)
    if twin is not None:
        artifacts["worldnet_twin"] = str(twin)
    info = mlflow.pyfunc.log_model(
        name="predictor",
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        signature=model_signature(),
        input_example=pd.DataFrame({"photo": [example_photo()]}),
        pip_requirements=PIP_REQUIREMENTS,
    )
    with redirect_stderr(io.StringIO()):  # MLflow prints "Registered model ... already exists" there; the CLI says what happened
        version = str(mlflow.register_model(info.model_uri, MODEL_NAME).version)
    MlflowClient().set_model_version_tag(MODEL_NAME, version, SHA256_TAG, file_hash(model))  # checked at every load
    return version


@task(name="register", retries=1, retry_delay_seconds=2)
def register_task(cfg: PipelineConfig, scores: dict[str, float], parent_run_id: str | None = None) -> dict[str, Any]:
    """Log + register the seen-protocol predictor; set challenger, maybe champion."""
    cat = cfg.catalog()
    model_file = cat.require("worldnet_model", protocol="seen", mode=resolve_head_mode(cfg.head_mode, "seen"))
    client = MlflowClient()
    split_hash = file_hash(cat.require("splits"))
    with ExitStack() as stack:
        run = stack.enter_context(stage_run(cfg, "register", parent_run_id))
        local_model = stack.enter_context(local_copy(model_file))
        mlflow.log_metrics({f"{p}_mean_km": v for p, v in scores.items()})
        mlflow.set_tag("split_sha256", split_hash)
        wn, backbone, _ = load_worldnet(local_model)
        weights = finetuned_weights(wn.finetuned) or cfg.backbone_weights
        engine = build_engine(backbone, weights, wn.frame, view=wn.view, engine="onnx", graphs_dir=cat.path("onnx_graphs"))
        graph = stack.enter_context(local_copy(engine.path)) if isinstance(engine, OnnxBackbone) else None
        twin_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="worldnet-twin-")))
        twin = stack.enter_context(local_copy(twin_file(model_file, twin_dir)))
        version = register_model_file(local_model, graph, twin)
        client.set_registered_model_alias(MODEL_NAME, "challenger", version)
        champion = _current_champion_scores(client)
        if champion is None:
            promote, decision = True, "promoted to champion (there was none)"
        elif champion["split"] != split_hash:
            promote, decision = False, "kept as challenger: the champion was scored on a different split; compare them on one split first"
        else:
            promote = all(scores[p] < champion[p] for p in ("seen", "unseen"))
            decision = "promoted to champion (better on both protocols)" if promote else "kept as challenger (not better on both protocols)"
        if promote:
            client.set_registered_model_alias(MODEL_NAME, "champion", version)
        mlflow.set_tag("registry_decision", decision)
        mlflow.log_dict({"challenger": scores, "champion_before": champion, "decision": decision}, "registry_decision.json")
        return {"version": version, "decision": decision, "champion_before": champion, "run_id": run.info.run_id}
