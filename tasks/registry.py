"""Log the predictor as an MLflow pyfunc model, register it, and manage aliases.

Every pipeline run registers a new version of ``worldnet`` and points the
``challenger`` alias at it; it takes ``champion`` only if it beats the current
champion's worldNET mean km on both protocols of the same split (same
``splits.parquet`` hash), or there is no champion yet. The decision and both
sets of figures are logged.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from prefect import task

from tasks.stages import PipelineConfig, _run
from tasks.tracking import MODEL_NAME, file_hash
from worldnet.evaluate import resolve_head_mode
from worldnet.storage import local_copy

PIP_REQUIREMENTS = ["worldnet", "torch==2.14.1", "torchvision==0.29.1", "timm", "polars", "shapely>=2", "geopandas>=1"]


class WorldNetPyfunc(PythonModel):
    """pyfunc wrapper: a DataFrame of image paths in, coordinates and top clusters out."""

    def load_context(self, context: Any) -> None:
        from worldnet.models.predictor import Predictor

        self.predictor = Predictor.load(context.artifacts["worldnet"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k", 3))
        preds = self.predictor.predict_paths([str(p) for p in model_input["path"]], top_k=top_k)
        return pd.DataFrame(
            {
                "lat": [p.lat for p in preds],
                "lon": [p.lon for p in preds],
                "country": [p.country for p in preds],
                "continent": [p.continent for p in preds],
                "top_clusters": [";".join(f"{n}:{q:.4f}" for n, q in p.top_clusters) for p in preds],
            }
        )


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


@task(name="register", retries=1, retry_delay_seconds=2)
def register_task(cfg: PipelineConfig, scores: dict[str, float], parent_run_id: str | None = None) -> dict[str, Any]:
    """Log + register the seen-protocol predictor; set challenger, maybe champion."""
    cat = cfg.catalog()
    model_file = cat.require("worldnet_model", protocol="seen", mode=resolve_head_mode(cfg.head_mode, "seen"))
    client = MlflowClient()
    split_hash = file_hash(cat.require("splits"))
    with _run(cfg, "register", parent_run_id) as run, local_copy(model_file) as local_model:
        mlflow.log_metrics({f"{p}_mean_km": v for p, v in scores.items()})
        mlflow.set_tag("split_sha256", split_hash)
        example = pd.DataFrame({"path": ["photo.jpg"]})
        signature = infer_signature(
            example,
            pd.DataFrame({"lat": [0.0], "lon": [0.0], "country": ["FR"], "continent": ["Europe"], "top_clusters": ["PRS:0.9"]}),
            params={"top_k": 3},
        )
        info = mlflow.pyfunc.log_model(
            name="predictor",
            python_model=WorldNetPyfunc(),
            artifacts={"worldnet": str(local_model)},
            signature=signature,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=MODEL_NAME,
        )
        version = str(info.registered_model_version)
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
