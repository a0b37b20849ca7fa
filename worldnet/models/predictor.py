"""The deployable predictor: photo → (lat, lon, country, continent, top clusters).

Bundles the backbone name, the trained worldNET (standardiser, classifier,
interpolation head, centroids) and the land-snap setting in one ``.pt`` file,
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from upath import UPath

from worldnet.data.shards import MAX_PIXELS, ShardSpec, frame_photo
from worldnet.features.backbones import Backbone, build_backbone
from worldnet.features.extract import decode_for
from worldnet.features.preprocess import normalise_batch
from worldnet.geo.land import snap_to_land
from worldnet.geo.regions import continent_of, country_of
from worldnet.io import write_with_atomic
from worldnet.models.worldnet_model import CentroidClassifier, ClassifierFit, InterpolationHead, Standardiser, WorldNet
from worldnet.storage import as_path


class ImageInputError(ValueError):
    """A file given to ``predict`` is missing, not an image, or too large."""


def _linear(seq: torch.nn.Sequential, i: int) -> torch.nn.Linear:
    layer = seq[i]
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"expected a Linear layer at position {i}, found {type(layer).__name__}")
    return layer


def save_worldnet(
    wn: WorldNet, path: str | Path | UPath, *, backbone: str, snap: bool = True, frame: tuple[int, int] | None = None
) -> UPath:
    """Write a trained worldNET and its settings to one file, atomically.

    ``frame`` (width, height) is how its training photos were framed; photos
    given to the predictor are framed the same way (None: the 4:3 default).
    """
    framed = frame or wn.frame
    blob: dict[str, object] = {
        "backbone": backbone,
        "frame": list(framed) if framed else None,
        "snap": snap,
        "mode": wn.mode,
        "mean": torch.from_numpy(wn.standardiser.mean),
        "std": torch.from_numpy(wn.standardiser.std),
        "centroids": torch.from_numpy(np.array(wn.centroids_latlon, dtype=np.float64)),
        "names": list(wn.centroid_names),
        "dims": [
            _linear(wn.classifier.net, 1).in_features,
            _linear(wn.classifier.net, 1).out_features,
            _linear(wn.head.mlp, 0).out_features,
        ],
        "classifier": wn.classifier.state_dict(),
        "classifier_kind": wn.classifier.kind,
        "head": wn.head.state_dict(),
        "metrics": {k: float(v) for k, v in wn.metrics.items()},
    }
    _torch_save_atomic(blob, path)
    return as_path(path)


def save_classifier(fit: ClassifierFit, path: str | Path | UPath) -> UPath:
    """Write the classifier stage's output (standardiser + classifier + metrics), atomically."""
    blob = {
        "mean": torch.from_numpy(fit.standardiser.mean),
        "std": torch.from_numpy(fit.standardiser.std),
        "dims": [
            _linear(fit.classifier.net, 1).in_features,
            _linear(fit.classifier.net, 1).out_features,
            _linear(fit.classifier.net, 4).out_features,
        ],
        "classifier": fit.classifier.state_dict(),
        "classifier_kind": fit.classifier.kind,
        "metrics": {k: float(v) for k, v in fit.metrics.items()},
    }
    _torch_save_atomic(blob, path)
    return as_path(path)


def _torch_load(path: str | Path | UPath) -> dict[str, Any]:
    with as_path(path).open("rb") as fh:
        blob: dict[str, Any] = torch.load(fh, map_location="cpu", weights_only=True)
    return blob


def load_classifier(path: str | Path | UPath) -> ClassifierFit:
    """Load what :func:`save_classifier` wrote."""
    blob = _torch_load(path)
    dim, hidden, k = blob["dims"]
    clf = CentroidClassifier(dim, k, hidden, kind=str(blob.get("classifier_kind", "mlp")))
    clf.load_state_dict(blob["classifier"])
    clf.eval()
    return ClassifierFit(Standardiser(blob["mean"].numpy(), blob["std"].numpy()), clf, dict(blob["metrics"]))


def _torch_save_atomic(blob: dict[str, object], path: str | Path | UPath) -> None:
    def _w(tmp: Path) -> None:
        buf = io.BytesIO()
        torch.save(blob, buf)
        tmp.write_bytes(buf.getvalue())

    write_with_atomic(path, _w)


def load_worldnet(path: str | Path | UPath) -> tuple[WorldNet, str, bool]:
    """Load what :func:`save_worldnet` wrote: (model, backbone name, snap setting)."""
    blob = _torch_load(path)
    dim, hidden, head_hidden = blob["dims"]
    c = blob["centroids"].numpy()
    clf = CentroidClassifier(dim, len(c), hidden, kind=str(blob.get("classifier_kind", "mlp")))
    clf.load_state_dict(blob["classifier"])
    clf.eval()
    head = InterpolationHead(c, head_hidden)
    head.load_state_dict(blob["head"])
    head.eval()
    metrics = dict(blob.get("metrics", {}))
    wn = WorldNet(Standardiser(blob["mean"].numpy(), blob["std"].numpy()), clf, head, c, list(blob["names"]), blob["mode"], metrics)
    if blob.get("frame"):
        wn.frame = (int(blob["frame"][0]), int(blob["frame"][1]))
    return wn, str(blob["backbone"]), bool(blob["snap"])


@dataclass
class Prediction:
    """One photo's answer."""

    path: str
    lat: float
    lon: float
    country: str
    continent: str
    top_clusters: list[tuple[str, float]]
    snapped_km: float

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "lat": self.lat,
            "lon": self.lon,
            "country": self.country,
            "continent": self.continent,
            "top_clusters": [{"name": n, "p": p} for n, p in self.top_clusters],
            "snapped_km": self.snapped_km,
        }


def read_photo(path: str | Path) -> bytes:
    """A photo's bytes, checked the way :func:`open_image` checks it (errors say what is wrong)."""
    open_image(path)
    return Path(path).read_bytes()


def open_image(path: str | Path) -> Image.Image:
    """Open a photo for prediction, with errors that say what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"{p}: no such file")
    try:
        img = Image.open(p)
        if img.width * img.height > MAX_PIXELS:
            raise ImageInputError(f"{p}: {img.width}x{img.height} is over the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
        img.load()
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageInputError(f"{p}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return img.convert("RGB")


class Predictor:
    """A loaded model ready to geolocate photos."""

    def __init__(self, model: WorldNet, backbone: Backbone, snap: bool = True):
        self.model = model
        self.backbone = backbone
        self.snap = snap
        w, h = model.frame or (ShardSpec.width, ShardSpec.height)
        self.shard_spec = ShardSpec(width=w, height=h)

    @classmethod
    def load(cls, path: str | Path | UPath, weights: str | None = None) -> Predictor:
        wn, backbone, snap = load_worldnet(path)
        return cls(wn, build_backbone(backbone, weights, wn.frame), snap)

    def predict_features(self, X: np.ndarray, names: list[str], top_k: int = 3) -> list[Prediction]:
        latlon, probs = self.model.predict(X)
        moved = np.zeros(len(latlon))
        if self.snap:
            s = snap_to_land(latlon[:, 0], latlon[:, 1])
            latlon = np.stack([s.lat, s.lon], 1)
            moved = s.moved_km
        countries = country_of(latlon[:, 0], latlon[:, 1])
        continents = continent_of(latlon[:, 0], latlon[:, 1])
        out = []
        for i, name in enumerate(names):
            top = np.argsort(-probs[i])[:top_k]
            out.append(
                Prediction(
                    name,
                    float(latlon[i, 0]),
                    float(latlon[i, 1]),
                    str(countries[i]),
                    str(continents[i]),
                    [(self.model.centroid_names[j], float(probs[i, j])) for j in top],
                    float(moved[i]),
                )
            )
        return out

    def features(self, photos: list[bytes]) -> np.ndarray:
        """Backbone features of encoded photos, through the training path (:func:`frame_photo`, then the model's decode)."""
        spec = self.backbone.spec
        arrays = np.stack([decode_for(spec, frame_photo(b, self.shard_spec)) for b in photos])
        with torch.inference_mode():
            return self.backbone(normalise_batch(torch.from_numpy(arrays), spec)).float().numpy()

    def predict_paths(self, paths: list[str], top_k: int = 3) -> list[Prediction]:
        """Geolocate photo files (raises :class:`ImageInputError` for a bad one)."""
        photos = [read_photo(p) for p in paths]
        return self.predict_features(self.features(photos), [str(p) for p in paths], top_k)
