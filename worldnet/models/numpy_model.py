"""worldNET's answer in numpy: the classifier and the interpolation head of a saved model, without PyTorch.

A trained worldNET is small (a standardiser, one or a few MLP layers, a head
of two layers over K centroids), and answering a photo runs each layer once.
PyTorch takes seconds to import for that; this module runs the same
arithmetic in numpy. :func:`~worldnet.models.predictor.save_worldnet` writes
a model's numpy twin beside its ``.pt`` (``{stem}.npz``, :func:`write_twin`):
arrays only, loaded with ``allow_pickle=False``, plus one JSON string for
names and settings, and the sha256 of the ``.pt`` it was made from, so a twin
is never used for another model's file.

:meth:`NumpyWorldNet.predict` gives what :meth:`WorldNet.predict
<worldnet.models.worldnet_model.WorldNet.predict>` gives (float64 inside,
so within float32 rounding of it; ``tests/models/test_numpy_model.py`` holds
them to 1e-4 in probability and under a kilometre on the map).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from upath import UPath

from worldnet import defaults
from worldnet.features.names import View
from worldnet.features.specs import saved_view
from worldnet.io import write_with_atomic
from worldnet.models.retrieval import Retrieval, retrieval_from
from worldnet.storage import as_path

#: Bumped when the twin's layout changes; a twin of another format is rebuilt from its ``.pt``.
TWIN_FORMAT = 1

#: The floor of a probability under a log, as the torch head's ``clamp_min(1e-8)``.
LOG_FLOOR = 1e-8


class NotATwinError(ValueError):
    """A file given as a numpy twin is not one :func:`write_twin` wrote (or of another format)."""


def twin_path(model: str | Path | UPath) -> UPath:
    """Where a model file's twin lives: beside it, ``{stem}.npz``."""
    return as_path(model).with_suffix(".npz")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """A tensor (anything with ``.numpy()``) or array as a numpy array, without importing torch."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.array(arr, dtype=dtype, order="C")  # a copy; 0-d stays 0-d


def twin_arrays(blob: Mapping[str, Any], source_sha256: str) -> dict[str, np.ndarray]:
    """A saved worldNET (the dict :func:`~worldnet.models.predictor.save_worldnet` writes) as named arrays.

    ``source_sha256``: the sha256 of the ``.pt`` bytes ``blob`` was read from or written to.
    """
    clf, head = blob["classifier"], blob["head"]
    kind = str(blob.get("classifier_kind", "mlp"))
    members = int(blob.get("members", 1))
    view = blob.get("view")
    meta = {
        "format": TWIN_FORMAT,
        "source_sha256": source_sha256,
        "backbone": str(blob["backbone"]),
        "frame": [int(v) for v in blob["frame"]] if blob.get("frame") else None,
        "view": saved_view(str(blob["backbone"]), view).as_dict(),
        "snap": bool(blob["snap"]),
        "mode": str(blob["mode"]),
        "names": [str(n) for n in blob["names"]],
        "classifier_kind": kind,
        "members": members,
        "dims": [int(d) for d in blob["dims"]],
        "metrics": {k: float(v) for k, v in dict(blob.get("metrics", {})).items()},
        "weights_id": str(blob["weights_id"]) if blob.get("weights_id") else None,
        "retrieval": dict(r["settings"]) if (r := blob.get("retrieval")) is not None else None,
    }
    extra = {}
    if r is not None:
        extra = {
            "ret_mean": _np(r["mean"], np.float32),
            "ret_memory": _np(r["memory"], np.float16),
            "ret_labels": _np(r["labels"], np.int64),
        }
    return {
        **extra,
        "meta": np.array(json.dumps(meta)),
        "std_mean": _np(blob["mean"], np.float32),
        "std_std": _np(blob["std"], np.float32),
        "std_power": np.array(float(blob.get("power", 1.0))),
        "centroids": _np(blob["centroids"], np.float64),
        "clf_w1": _np(clf["net.1.weight"], np.float32),
        "clf_b1": _np(clf["net.1.bias"], np.float32),
        "clf_w2": _np(clf["net.4.weight"], np.float32),
        "clf_b2": _np(clf["net.4.bias"], np.float32),
        "head_w1": _np(head["mlp.0.weight"], np.float32),
        "head_b1": _np(head["mlp.0.bias"], np.float32),
        "head_w2": _np(head["mlp.2.weight"], np.float32),
        "head_b2": _np(head["mlp.2.bias"], np.float32),
        "head_temperature": _np(head["temperature"], np.float32),
        # heads saved before the confidence slope and the median existed: no slope, the paper's mean
        "head_temperature_slope": _np(head.get("temperature_slope", 0.0), np.float32),
        "head_median_steps": np.array(int(_np(head.get("median_steps", 0)))),
        "head_centroid_xyz": _np(head["centroid_xyz"], np.float32),
    }


def write_twin(path: str | Path | UPath, blob: Mapping[str, Any], source_sha256: str) -> UPath:
    """Write ``blob``'s twin (:func:`twin_arrays`) to ``path`` atomically (``np.savez``: arrays only, no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **twin_arrays(blob, source_sha256))  # type: ignore[arg-type]  # numpy's stub types the names' values as its keyword flag
    data = buf.getvalue()
    write_with_atomic(path, lambda tmp: tmp.write_bytes(data))
    return as_path(path)


def twin_source(path: str | Path | UPath) -> str | None:
    """The sha256 of the ``.pt`` a twin file was made from; None if it is no readable twin of this format."""
    try:
        return read_twin(path).source_sha256
    except (NotATwinError, OSError):
        return None


def read_twin(path: str | Path | UPath) -> NumpyWorldNet:
    """Load a twin :func:`write_twin` wrote.

    Raises:
        NotATwinError: The file is not a twin of this format (garbage, pickled objects, missing arrays).
        OSError: It cannot be read.
    """
    p = as_path(path)
    with p.open("rb") as fh:
        data = fh.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:  # noqa: BLE001 - a zip, npy or JSON error all mean "not a twin"
        raise NotATwinError(f"{path} is not a worldnet numpy twin ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != TWIN_FORMAT:
        raise NotATwinError(f"{path} is a twin of another format ({meta.get('format') if isinstance(meta, dict) else '?'})")
    try:
        return NumpyWorldNet.from_arrays(meta, arrays)
    except (KeyError, ValueError, TypeError) as exc:
        raise NotATwinError(f"{path} is not a whole worldnet numpy twin ({type(exc).__name__}: {exc})") from None


def signed_power(X: np.ndarray, power: float) -> np.ndarray:
    """``sign(x)·|x|^power``, as :func:`worldnet.models.worldnet_model.signed_power` (the same arithmetic, in numpy)."""
    if not 0 < power <= 1:
        raise ValueError(f"feature power must be in (0, 1] (1 leaves the features as extracted), got {power}")
    if power == 1:
        return X
    return (np.sign(X) * np.abs(X) ** power).astype(X.dtype, copy=False)


def rows_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` one row of ``a`` at a time: a row's result never depends on the rows beside it.

    BLAS picks its kernel by the shape of the whole product, so the same
    photo's last bits would differ between a batch of one and a batch of two
    (``predict a.jpg`` against ``predict a.jpg b.jpg``). Row by row, every
    answer is the same whatever it was batched with, as on the torch path.
    """
    if a.ndim != 2:
        raise ValueError(f"expected a (rows, n) array, got shape {a.shape}")
    out = np.empty((len(a), b.shape[1]), dtype=np.result_type(a, b))
    for i in range(len(a)):
        out[i] = np.ascontiguousarray(a[i]) @ b
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def compose(weights: np.ndarray, centroid_xyz: np.ndarray, median_steps: int = 0) -> np.ndarray:
    """(lat, lon) in degrees: :func:`worldnet.models.worldnet_model.compose` in numpy (weighted mean, then Weiszfeld steps)."""
    v = rows_matmul(weights, centroid_xyz)
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
    for _ in range(median_steps):
        d = np.arccos(np.clip(rows_matmul(v, centroid_xyz.T), -1 + 1e-6, 1 - 1e-6))
        v = rows_matmul(weights / np.maximum(d, 1e-3), centroid_xyz)
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)
    lat = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
    lon = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    return np.stack([lat, lon], axis=-1)


@dataclass
class NumpyWorldNet:
    """A trained worldNET's answer path in numpy: features → distribution over the centroids → (lat, lon).

    Duck-typed like :class:`~worldnet.models.worldnet_model.WorldNet` where a
    :class:`~worldnet.models.predictor.Predictor` uses it (``predict``,
    ``locate``, ``centroid_names``, ``frame``, ``view``).
    """

    mean: np.ndarray
    std: np.ndarray
    power: float
    classifier_kind: str
    members: int
    clf: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    head: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    temperature: float
    temperature_slope: float
    median_steps: int
    centroid_xyz: np.ndarray
    centroids_latlon: np.ndarray
    centroid_names: list[str]
    mode: str
    backbone: str
    snap: bool
    source_sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    frame: tuple[int, int] | None = None
    view: View | None = None
    #: The backbone's weights fingerprint when its last stages were fine-tuned (names its ONNX graph); None: pretrained.
    weights_id: str | None = None
    #: The nearest training photos' vote (:mod:`worldnet.models.retrieval`); None: the classifier's distribution alone.
    retrieval: Retrieval | None = None

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], a: Mapping[str, np.ndarray]) -> NumpyWorldNet:
        f64 = np.float64
        kind, members = str(meta["classifier_kind"]), int(meta["members"])
        if kind not in defaults.CLASSIFIERS:
            raise ValueError(f"unknown classifier kind {kind!r}")
        names = [str(n) for n in meta["names"]]
        centroids = np.asarray(a["centroids"], f64)
        k = len(names)
        w2 = np.asarray(a["clf_w2"], f64)
        if centroids.shape != (k, 2) or w2.shape[-1 if members > 1 else 0] != k or a["head_centroid_xyz"].shape != (k, 3):
            raise ValueError(f"the arrays do not describe {k} centroids")
        frame = meta.get("frame")
        view = meta.get("view") or {}
        return cls(
            mean=np.asarray(a["std_mean"], np.float32),
            std=np.asarray(a["std_std"], np.float32),
            power=float(a["std_power"]),
            classifier_kind=kind,
            members=members,
            clf=(np.asarray(a["clf_w1"], f64), np.asarray(a["clf_b1"], f64), w2, np.asarray(a["clf_b2"], f64)),
            head=tuple(np.asarray(a[n], f64) for n in ("head_w1", "head_b1", "head_w2", "head_b2")),  # type: ignore[arg-type]
            temperature=float(a["head_temperature"]),
            temperature_slope=float(a["head_temperature_slope"]),
            median_steps=int(a["head_median_steps"]),
            centroid_xyz=np.asarray(a["head_centroid_xyz"], f64),
            centroids_latlon=centroids,
            centroid_names=names,
            mode=str(meta["mode"]),
            backbone=str(meta["backbone"]),
            snap=bool(meta["snap"]),
            source_sha256=str(meta["source_sha256"]),
            metrics={k: float(v) for k, v in dict(meta.get("metrics") or {}).items()},
            frame=(int(frame[0]), int(frame[1])) if frame else None,
            view=View(view.get("height"), bool(view.get("flip", False))),
            weights_id=str(meta["weights_id"]) if meta.get("weights_id") else None,
            retrieval=(
                retrieval_from(a["ret_mean"], a["ret_memory"], a["ret_labels"], k, meta["retrieval"])
                if meta.get("retrieval") is not None
                else None
            ),
        )

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """Features as the classifier saw them in training: the signed power, then standardised (float32, as the torch path)."""
        return ((signed_power(X, self.power) - self.mean) / self.std).astype(np.float32)

    def proba(self, X: np.ndarray) -> np.ndarray:
        """(N, K) classifier probabilities of raw features ``X``: the ensemble's mean of its members' softmax."""
        x = self.standardise(np.asarray(X)).astype(np.float64)
        w1, b1, w2, b2 = self.clf
        h = rows_matmul(x, w1.T) + b1
        if self.classifier_kind == "linear":
            return softmax(rows_matmul(h, w2.T) + b2)
        h = np.maximum(h, 0.0)
        if self.members == 1:
            return softmax(rows_matmul(h, w2.T) + b2)
        hm = h.reshape(len(h), self.members, -1)
        per = np.stack([rows_matmul(hm[:, m], w2[m]) for m in range(self.members)], axis=1) + b2  # (N, members, K)
        return softmax(per).mean(axis=1)

    def weights(self, probs: np.ndarray) -> np.ndarray:
        """The head's softmax weights over the centroids (:meth:`InterpolationHead.weights`)."""
        w1, b1, w2, b2 = self.head
        trust = np.maximum(self.temperature + self.temperature_slope * (probs.max(axis=-1, keepdims=True) - 0.5), 0.0)
        logits = rows_matmul(np.maximum(rows_matmul(probs, w1.T) + b1, 0.0), w2.T) + b2 + np.log(np.maximum(probs, LOG_FLOOR)) * trust
        return softmax(logits)

    def locate(self, probs: np.ndarray) -> np.ndarray:
        """(N, 2) lat/lon (before land snapping) for (N, K) distributions over the centroids: the interpolation head."""
        p = np.asarray(probs, dtype=np.float32).astype(np.float64)
        return compose(self.weights(p), self.centroid_xyz, self.median_steps)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) lat/lon before land snapping, and (N, K) distributions over the centroids (float32; with retrieval's vote)."""
        probs = self.proba(X).astype(np.float32)
        if self.retrieval is not None:
            probs = self.retrieval.blend(probs, X)
        return self.locate(probs), probs


__all__ = [
    "TWIN_FORMAT",
    "NotATwinError",
    "NumpyWorldNet",
    "compose",
    "read_twin",
    "sha256_bytes",
    "twin_arrays",
    "twin_path",
    "twin_source",
    "write_twin",
]
