"""The registered model's code (MLflow *models from code*): photo bytes in, one answer per row out.

MLflow stores this file with the model and runs it on load; nothing is
unpickled, so writing to the registry does not let anyone run code on the
machines that load it (a ``python_model.pkl`` planted beside it is never read).

Input (a DataFrame, or JSON ``{"dataframe_records": [...]}`` to ``mlflow models serve``):

* ``photo``: the photo's bytes, base64-encoded (JPEG, PNG, WebP, AVIF ...);
* ``path``: a photo file on the serving machine, honoured only when the loader
  opts in with ``model_config={"allow_paths": True}`` (never when served).

Output, one row per input row, in order: ``status`` (``ok`` or why not:
``not_an_image``, ``too_large``, ``corrupt_image`` ...), ``error`` (one line),
``lat``, ``lon``, ``country``, ``continent``, ``top_clusters`` (JSON list of
``[name, probability]``) and ``snapped_km``. A bad row never fails the others.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from worldnet.models.predictor import PhotoAnswer

OUTPUT_COLUMNS = ("status", "error", "lat", "lon", "country", "continent", "top_clusters", "snapped_km")


class WorldNetPhotos(PythonModel):
    """Geolocate base64 photos (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from worldnet.models.fast import load_predictor
        from worldnet.models.predictor import MAX_PHOTO_BYTES

        config = context.model_config or {}
        self.allow_paths = bool(config.get("allow_paths", False))
        self.max_bytes = int(config.get("max_photo_bytes", MAX_PHOTO_BYTES))
        graphs = context.artifacts.get("onnx_graphs")
        # the numpy twin (artifact worldnet_twin) sits beside the .pt; a model registered before twins existed gets one made
        self.predictor = load_predictor(
            context.artifacts["worldnet"], engine=str(config.get("engine", "auto")), graph_dirs=[Path(graphs).parent] if graphs else []
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k", 3))
        read = [self._bytes_of(row) for row in model_input.to_dict("records")]
        ok = [i for i, (_, problem) in enumerate(read) if problem is None]
        answered = self.predictor.answer([read[i][0] for i in ok], [str(i) for i in ok], top_k=top_k, max_bytes=self.max_bytes)
        answers: dict[int, PhotoAnswer] = dict(zip(ok, answered, strict=True))
        out = []
        for i, (_, problem) in enumerate(read):
            a = answers.get(i)
            p = a.prediction if a else None
            status, error = (a.status, a.error) if a else problem or ("empty", "the row has no photo")
            out.append(
                {
                    "status": status,
                    "error": error,
                    "lat": p.lat if p else None,
                    "lon": p.lon if p else None,
                    "country": p.country if p else None,
                    "continent": p.continent if p else None,
                    "top_clusters": json.dumps([[n, round(q, 4)] for n, q in p.top_clusters]) if p else None,
                    "snapped_km": p.snapped_km if p else None,
                }
            )
        return pd.DataFrame(out, columns=list(OUTPUT_COLUMNS))

    def _bytes_of(self, row: dict[Any, Any]) -> tuple[bytes, tuple[str, str] | None]:
        """A row's photo bytes, or why there are none (a one-line reason, never a server path)."""
        photo, path = row.get("photo"), row.get("path")
        if isinstance(photo, str) and photo:
            try:
                return base64.b64decode(photo, validate=True), None
            except (binascii.Error, ValueError):
                return b"", ("not_base64", "the photo column must hold base64-encoded bytes")
        if isinstance(path, str) and path:
            if not self.allow_paths:
                return b"", ("paths_not_allowed", "send the photo's bytes (base64) in the photo column; paths are off")
            try:
                return Path(path).read_bytes(), None
            except OSError:
                return b"", ("missing_image", "no readable file at that path")
        return b"", ("empty", "the row has no photo")


mlflow.models.set_model(WorldNetPhotos())
