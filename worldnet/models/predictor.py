"""The deployable predictor: photo → (lat, lon, country, continent, top clusters).

Bundles the backbone name, the trained worldNET (standardiser, classifier,
interpolation head, centroids) and the land-snap setting in one ``.pt`` file,
loaded with ``weights_only=True``, and its numpy twin beside it (``{stem}.npz``),
which answers without PyTorch (:mod:`worldnet.models.fast`: this module imports
torch only inside the functions that need it). Several photos of one place answer once:
their distributions over the centroids are combined (:func:`combine_views`)
before the head (:meth:`Predictor.answer_place`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from upath import UPath

from worldnet.data.frame import MAX_PIXELS, ShardSpec, frame_photo
from worldnet.data.photos import HEAD_BYTES, describe_head, sniff_format
from worldnet.features.names import View
from worldnet.features.onnx_graph import OnnxBackbone
from worldnet.features.preprocess import decode_for
from worldnet.features.specs import saved_view
from worldnet.geo.land import snap_to_land
from worldnet.geo.regions import continent_of, country_of
from worldnet.io import write_with_atomic
from worldnet.models.retrieval import retrieval_from
from worldnet.storage import as_path

if TYPE_CHECKING:  # the answer path (ONNX Runtime and numpy: worldnet.models.numpy_model) never imports torch
    import torch

    from worldnet.features.backbones import Backbone
    from worldnet.models.numpy_model import NumpyWorldNet
    from worldnet.models.worldnet_model import ClassifierFit, Standardiser, WorldNet


class ImageInputError(ValueError):
    """A file given to ``predict`` is missing, not an image, or too large."""


def _linear(seq: torch.nn.Sequential, i: int) -> torch.nn.Linear:
    import torch

    layer = seq[i]
    if not isinstance(layer, torch.nn.Linear):
        raise TypeError(f"expected a Linear layer at position {i}, found {type(layer).__name__}")
    return layer


def save_worldnet(
    wn: WorldNet,
    path: str | Path | UPath,
    *,
    backbone: str,
    snap: bool = True,
    frame: tuple[int, int] | None = None,
    view: View | None = None,
    finetuned: str | Path | UPath | None = None,
) -> UPath:
    """Write a trained worldNET and its settings to one file, atomically, and its numpy twin beside it.

    ``finetuned``: the ``finetune`` stage's file, when the backbone's last
    stages were fine-tuned; its bytes travel inside the model, so the model
    alone rebuilds its backbone (:func:`finetuned_weights`).

    ``frame`` (width, height) is how its training photos were framed and
    ``view`` how the backbone looked at them; photos given to the predictor are
    framed and viewed the same way (None: the 4:3 default, the backbone's view).
    The twin (``{stem}.npz``, :mod:`worldnet.models.numpy_model`) is what
    answers a photo without PyTorch; it records the sha256 of this ``.pt``.
    """
    import torch

    from worldnet.models.numpy_model import twin_path, write_twin

    framed = frame or wn.frame
    viewed = view or wn.view or View()
    blob: dict[str, object] = {
        "backbone": backbone,
        "frame": list(framed) if framed else None,
        "view": viewed.as_dict(),
        "snap": snap,
        "mode": wn.mode,
        "mean": torch.from_numpy(wn.standardiser.mean),
        "std": torch.from_numpy(wn.standardiser.std),
        "power": wn.standardiser.power,
        "centroids": torch.from_numpy(np.array(wn.centroids_latlon, dtype=np.float64)),
        "names": list(wn.centroid_names),
        "dims": [wn.classifier.dim, wn.classifier.hidden, _linear(wn.head.mlp, 0).out_features],
        "members": wn.classifier.members,
        "classifier": wn.classifier.state_dict(),
        "classifier_kind": wn.classifier.kind,
        "head": wn.head.state_dict(),
        "metrics": {k: float(v) for k, v in wn.metrics.items()},
    }
    if wn.retrieval is not None:
        r = wn.retrieval
        blob["retrieval"] = {
            "mean": torch.from_numpy(np.ascontiguousarray(r.mean, dtype=np.float32)),
            "memory": torch.from_numpy(np.ascontiguousarray(r.memory, dtype=np.float16)),
            "labels": torch.from_numpy(np.ascontiguousarray(r.labels, dtype=np.int64)),
            "settings": {"k": int(r.k), "tau": float(r.tau), "mix": float(r.mix)},
        }
    tuned = as_path(finetuned).read_bytes() if finetuned is not None else wn.finetuned
    if tuned is not None:
        from worldnet.features.onnx_graph import bytes_fingerprint

        blob["finetuned"] = torch.frombuffer(bytearray(tuned), dtype=torch.uint8)
        blob["weights_id"] = bytes_fingerprint(backbone, tuned)
    data = _torch_save_atomic(blob, path)
    write_twin(twin_path(path), blob, hashlib.sha256(data).hexdigest())
    return as_path(path)


def save_classifier(fit: ClassifierFit, path: str | Path | UPath) -> UPath:
    """Write the classifier stage's output (standardiser + classifier + metrics), atomically."""
    import torch

    blob = {
        "mean": torch.from_numpy(fit.standardiser.mean),
        "std": torch.from_numpy(fit.standardiser.std),
        "power": fit.standardiser.power,
        "dims": [fit.classifier.dim, fit.classifier.hidden, fit.classifier.k],
        "members": fit.classifier.members,
        "classifier": fit.classifier.state_dict(),
        "classifier_kind": fit.classifier.kind,
        "metrics": {k: float(v) for k, v in fit.metrics.items()},
    }
    _torch_save_atomic(blob, path)
    return as_path(path)


class NotAModelError(ValueError):
    """A file given as a model is not one worldnet wrote (a user error: never retried)."""


def _torch_load(path: str | Path | UPath) -> dict[str, Any]:
    """Load a model file written by this module; anything else is a :class:`NotAModelError` that says what to pass.

    ``weights_only=True``: a file holding pickled code is refused, never run.
    """
    import torch

    p = as_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file {path} not found: pass a worldnet .pt file or models:/worldnet@champion")
    try:
        with p.open("rb") as fh:
            blob = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage, truncation and pickled code raise many types; all mean the same
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
        raise NotAModelError(
            f"{path} is not a worldnet model file ({type(exc).__name__}: {reason}); "
            "pass a .pt that `worldnet run` wrote, or models:/worldnet@champion"
        ) from None
    if not isinstance(blob, dict) or "dims" not in blob:
        raise NotAModelError(f"{path} is a PyTorch file but not a worldnet model; pass a .pt that `worldnet run` wrote")
    return blob


def load_classifier(path: str | Path | UPath) -> ClassifierFit:
    """Load what :func:`save_classifier` wrote."""
    from worldnet.models.worldnet_model import CentroidClassifier, ClassifierFit

    blob = _torch_load(path)
    dim, hidden, k = blob["dims"]
    clf = CentroidClassifier(dim, k, hidden, kind=str(blob.get("classifier_kind", "mlp")), members=int(blob.get("members", 1)))
    clf.load_state_dict(blob["classifier"])
    clf.eval()
    return ClassifierFit(_standardiser(blob), clf, dict(blob["metrics"]))


def _standardiser(blob: dict[str, Any]) -> Standardiser:
    """The saved standardiser; models saved before the feature power existed used the features as extracted (power 1)."""
    from worldnet.models.worldnet_model import Standardiser

    return Standardiser(blob["mean"].numpy(), blob["std"].numpy(), float(blob.get("power", 1.0)))


def _torch_save_atomic(blob: dict[str, object], path: str | Path | UPath) -> bytes:
    """Write ``blob`` with ``torch.save`` atomically; returns the bytes written."""
    import torch

    buf = io.BytesIO()
    torch.save(blob, buf)
    data = buf.getvalue()
    write_with_atomic(path, lambda tmp: tmp.write_bytes(data))
    return data


def load_worldnet(path: str | Path | UPath) -> tuple[WorldNet, str, bool]:
    """Load what :func:`save_worldnet` wrote: (model, backbone name, snap setting)."""
    from worldnet.models.worldnet_model import CentroidClassifier, InterpolationHead, WorldNet

    blob = _torch_load(path)
    dim, hidden, head_hidden = blob["dims"]
    c = blob["centroids"].numpy()
    clf = CentroidClassifier(dim, len(c), hidden, kind=str(blob.get("classifier_kind", "mlp")), members=int(blob.get("members", 1)))
    clf.load_state_dict(blob["classifier"])
    clf.eval()
    head = InterpolationHead(c, head_hidden)
    head.load_state_dict(blob["head"])
    head.eval()
    metrics = dict(blob.get("metrics", {}))
    wn = WorldNet(_standardiser(blob), clf, head, c, list(blob["names"]), blob["mode"], metrics)
    if blob.get("frame"):
        wn.frame = (int(blob["frame"][0]), int(blob["frame"][1]))
    wn.view = saved_view(str(blob["backbone"]), blob.get("view"))
    if blob.get("retrieval") is not None:
        r = blob["retrieval"]
        wn.retrieval = retrieval_from(r["mean"].numpy(), r["memory"].numpy(), r["labels"].numpy(), len(c), r["settings"])
    if blob.get("finetuned") is not None:
        wn.finetuned = blob["finetuned"].numpy().tobytes()
        wn.weights_id = str(blob["weights_id"])
    return wn, str(blob["backbone"]), bool(blob["snap"])


def finetuned_weights(finetuned: bytes | None) -> str | None:
    """A model's fine-tuned stages as a file the backbone builder reads (None for a pretrained backbone).

    Written once per content under the worldnet cache folder
    (``$WORLDNET_CACHE_DIR``, else ``~/.cache/worldnet``), byte for byte as the
    ``finetune`` stage wrote it, so its fingerprint names the same ONNX graph.
    """
    if finetuned is None:
        return None
    import hashlib

    from worldnet.geo.naturalearth import prepared_dir
    from worldnet.io import write_bytes_atomic

    path = prepared_dir() / "finetuned" / f"{hashlib.sha256(finetuned).hexdigest()[:16]}.pt"
    if not path.is_file():
        write_bytes_atomic(path, finetuned)
    return str(path)


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
    with open(p, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if sniff_format(head) is None:
        raise ImageInputError(f"{p}: {describe_head(head)}")
    try:
        img = Image.open(p)
        if img.width * img.height > MAX_PIXELS:
            raise ImageInputError(f"{p}: {img.width}x{img.height} is over the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
        img.load()
    except ImageInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageInputError(f"{p}: not a readable image ({type(exc).__name__}: {exc})") from exc
    from worldnet.data.photos import PhotoRejectedError, check_photo_size, to_rgb8  # the shard stage's own decoding

    try:
        check_photo_size(img)
        return to_rgb8(img)  # 16-bit and float photos by their real range, not clipped
    except PhotoRejectedError as exc:
        raise ImageInputError(f"{p}: {exc}") from exc


#: Largest photo a client may send, by default (``worldnet serve --max-upload-mb``).
MAX_PHOTO_BYTES = 20 * 2**20


@dataclass
class PhotoAnswer:
    """One photo's outcome: ``status`` is ``ok`` (with ``prediction``) or why not, with a one-line ``error``.

    Statuses: ``ok``, ``empty``, ``too_large`` (bytes), ``too_many_pixels``
    (a decompression bomb, or just too big to decode), ``not_an_image``,
    ``corrupt_image`` (truncated or damaged).
    """

    name: str
    status: str
    error: str = ""
    prediction: Prediction | None = None

    def as_dict(self) -> dict[str, object]:
        base: dict[str, object] = {"name": self.name, "status": self.status, "error": self.error}
        if self.prediction is not None:
            base.update({k: v for k, v in self.prediction.as_dict().items() if k != "path"})
        return base


@dataclass
class PlaceAnswer:
    """Several photos of one place and their one answer.

    ``status`` is ``ok`` (with ``prediction``, from the readable views'
    combined distribution) or ``no_readable_view``; ``views`` holds each
    photo's own :class:`PhotoAnswer`, bad ones with their status.
    """

    name: str
    status: str
    error: str
    prediction: Prediction | None
    views: list[PhotoAnswer]

    @property
    def used(self) -> list[str]:
        """The photos the answer combines."""
        return [v.name for v in self.views if v.status == "ok"]

    def as_dict(self, views: bool = True) -> dict[str, object]:
        """The place as JSON-ready fields: counts, the photos used, the answer; each photo's own answer too if ``views``."""
        base: dict[str, object] = {
            "name": self.name,
            "status": self.status,
            "error": self.error,
            "n_photos": len(self.views),
            "n_views": len(self.used),
            "views_used": self.used,
        }
        if self.prediction is not None:
            base.update({k: v for k, v in self.prediction.as_dict().items() if k != "path"})
        if views:
            base["views"] = [v.as_dict() for v in self.views]
        return base


@dataclass
class DecodedPhotos:
    """Photos checked, framed and decoded for the backbone (:meth:`Predictor.decode`), waiting for the model.

    ``answers`` has one :class:`PhotoAnswer` per photo (a bad one already has
    its status); ``framed`` holds the good photos' backbone-sized uint8 arrays,
    and ``good`` their indices in ``answers``.
    """

    answers: list[PhotoAnswer]
    framed: list[np.ndarray] = field(default_factory=list)
    good: list[int] = field(default_factory=list)


def photo_problem(data: bytes, max_bytes: int = MAX_PHOTO_BYTES) -> tuple[str, str] | None:
    """``(status, message)`` if ``data`` cannot be a photo worth decoding, before any decoding; else ``None``."""
    if not data:
        return "empty", "the photo is empty (0 bytes)"
    if len(data) > max_bytes:
        return "too_large", f"the photo is {len(data) / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit"
    if sniff_format(data[:HEAD_BYTES]) is None:
        return "not_an_image", describe_head(data[:HEAD_BYTES])
    return None


def decoded_pixels(data: bytes, width: int, height: int, max_bytes: int = MAX_PHOTO_BYTES) -> int:
    """Pixels that framing ``data`` to ``width``×``height`` (:func:`frame_photo`) decodes, read from its header alone.

    Nothing is decoded: the header gives the size, and a JPEG counts at the
    reduced scale its draft mode decodes at (a 56 MP JPEG framed to 400×300 is
    decoded at 1/8 scale, under 1 MP), any other format at full size. 0 for a
    photo that is never decoded: refused before decoding (:func:`photo_problem`),
    a header Pillow cannot read, or over the :data:`MAX_PIXELS` limit (refused as
    ``too_many_pixels``). A server sums this over a request to refuse one that
    would decode too much (``worldnet serve --max-request-megapixels``).
    """
    if photo_problem(data, max_bytes) is not None:
        return 0
    try:
        with Image.open(io.BytesIO(data)) as img:  # parses the header only; the pixels are read by load()
            w, h = img.size
            if w * h > MAX_PIXELS or min(w, h) < 1:
                return 0
            scale = max(width / w, height / h)
            img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))  # as decode_resize asks; reads no pixels
            return int(img.width * img.height)
    except Exception:  # noqa: BLE001 - a header Pillow cannot read is refused by decoding, with its own status
        return 0


def _decode_problem(exc: Exception) -> tuple[str, str]:
    """A decoder failure as ``(status, one-line message)``: never a stack trace, never a server path."""
    from worldnet.data.photos import PhotoRejectedError

    if isinstance(exc, PhotoRejectedError):
        return exc.reason, exc.detail
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError) or "pixel limit" in text or "decompression bomb" in text.lower():
        return "too_many_pixels", f"the photo has too many pixels to decode safely (limit {MAX_PIXELS:,})"
    return "corrupt_image", f"the photo could not be decoded (truncated or damaged): {type(exc).__name__}"


def _predictions(
    model: WorldNet | NumpyWorldNet, latlon: np.ndarray, probs: np.ndarray, names: list[str], top_k: int, snap: bool
) -> list[Prediction]:
    """Coordinates from the head (snapped to land if ``snap``) and distributions as :class:`Prediction` rows."""
    moved = np.zeros(len(latlon))
    if snap:
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
                [(model.centroid_names[j], float(probs[i, j])) for j in top],
                float(moved[i]),
            )
        )
    return out


def predict_distributions(
    model: WorldNet | NumpyWorldNet, probs: np.ndarray, names: list[str], *, top_k: int = 3, snap: bool = True
) -> list[Prediction]:
    """Answers for (N, K) distributions over ``model``'s centroids: its interpolation head, then land snapping.

    No backbone needed: ``predict-batch`` answers its places from the
    distributions its shards stored.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(model.centroid_names):
        raise ValueError(f"expected distributions over {len(model.centroid_names)} centroids, got shape {probs.shape}")
    latlon = model.locate(probs)
    return _predictions(model, latlon, probs, names, top_k, snap)


#: The smallest probability a view's distribution counts with when views are combined: the floor the head's own log uses.
VIEW_FLOOR = 1e-8


def combine_views(probs: np.ndarray) -> np.ndarray:
    """One place's (V, K) per-view distributions over the centroids → one distribution: their normalised geometric mean.

    ``p(k) ∝ (∏ᵥ pᵥ(k))^(1/V)``, i.e. the softmax of the mean log-probability:
    a product of experts, one expert per view. Views of one place are looks at
    the same spot, so a centroid is likely only where every view allows it: a
    street sign that says Spain and a skyline that could be Madrid or Bangkok
    agree on Madrid. The mean of probabilities (a mixture) would instead keep
    both hypotheses, and the interpolation head, a weighted spherical mean of
    the centroids, puts a two-peaked distribution between its peaks, where
    neither view put the photo. The V-th root keeps the combined distribution
    about as sharp as one view's, which is what the head was trained on; the
    plain product would grow more confident with every view added.

    Each probability counts at least :data:`VIEW_FLOOR` (the floor of the
    head's own ``log p``), so one view that all but rules a centroid out
    lowers it by a bounded amount rather than vetoing it. One view is its own
    distribution, returned unchanged (a place of one photo answers exactly as
    the photo does).
    """
    p = np.asarray(probs)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"expected (views, centroids) distributions, got shape {p.shape}")
    if len(p) == 1:
        return p[0].copy()
    log_mean = np.log(np.maximum(p.astype(np.float64), VIEW_FLOOR)).mean(axis=0)
    w = np.exp(log_mean - log_mean.max())
    return (w / w.sum()).astype(p.dtype)


class Predictor:
    """A loaded model ready to geolocate photos."""

    def __init__(self, model: WorldNet | NumpyWorldNet, backbone: Backbone | OnnxBackbone, snap: bool = True):
        self.model = model
        self.backbone = backbone
        self.snap = snap
        w, h = model.frame or (ShardSpec.width, ShardSpec.height)
        self.shard_spec = ShardSpec(width=w, height=h)

    @classmethod
    def load(
        cls,
        path: str | Path | UPath,
        weights: str | None = None,
        *,
        engine: str = "auto",
        graphs_dir: str | Path | UPath | None = None,
        threads: int | None = None,
    ) -> Predictor:
        """Load a model file with its backbone on ``engine`` (see :func:`~worldnet.features.engine.build_engine`).

        ``graphs_dir``: where ONNX graphs are cached (the catalog's ``onnx_graphs``); ``None`` exports in memory.
        The classifier and head run in PyTorch; :func:`worldnet.models.fast.load_fast` loads the same model
        without it (numpy and ONNX Runtime only).
        """
        from worldnet.features.engine import build_engine

        wn, backbone, snap = load_worldnet(path)
        weights = weights or finetuned_weights(wn.finetuned)
        return cls(
            wn,
            build_engine(backbone, weights, wn.frame, view=wn.view, engine=engine, device="cpu", graphs_dir=graphs_dir, threads=threads),
            snap,
        )

    @property
    def engine(self) -> str:
        """``onnx`` or ``torch``: what runs the backbone."""
        return "onnx" if isinstance(self.backbone, OnnxBackbone) else "torch"

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 NHWC images (as decoded) on this predictor's engine, rounded to float16 as training stored them.

        The rounding matches what the classifier was trained on, and makes an
        answer independent of the engine's last bits (thread count, engine), so
        every runner writes byte-identical predictions.
        """
        if isinstance(self.backbone, OnnxBackbone):
            out = self.backbone(images)
        else:
            import torch

            from worldnet.features.preprocess import normalise_batch

            with torch.inference_mode():
                out = self.backbone(normalise_batch(torch.from_numpy(images), self.backbone.spec)).float().numpy()
        return out.astype(np.float16).astype(np.float32)

    def predict_features(self, X: np.ndarray, names: list[str], top_k: int = 3) -> list[Prediction]:
        return self.predict_with_probs(X, names, top_k)[0]

    def predict_with_probs(self, X: np.ndarray, names: list[str], top_k: int = 3) -> tuple[list[Prediction], np.ndarray]:
        """:meth:`predict_features`, and the (N, K) classifier distributions the answers came from (to combine views later)."""
        latlon, probs = self.model.predict(X)
        return _predictions(self.model, latlon, probs, names, top_k, self.snap), probs

    def predict_distributions(self, probs: np.ndarray, names: list[str], top_k: int = 3) -> list[Prediction]:
        """Answers for (N, K) distributions over the centroids (a place's :func:`combine_views`): head, then land snap."""
        return predict_distributions(self.model, probs, names, top_k=top_k, snap=self.snap)

    def features(self, photos: list[bytes]) -> np.ndarray:
        """Backbone features of encoded photos, through the training path (:func:`frame_photo`, then the model's decode)."""
        spec = self.backbone.spec
        return self.embed(np.stack([decode_for(spec, frame_photo(b, self.shard_spec)) for b in photos]))

    def decode(self, photos: list[bytes], names: list[str], max_bytes: int = MAX_PHOTO_BYTES) -> DecodedPhotos:
        """The model-free half of :meth:`answer`: each photo checked, framed and decoded for the backbone.

        Uses no model state, so it may run on any thread while another request
        holds the model (a server decodes outside its model lock); only the
        backbone-sized arrays are kept, never a photo's full-size decoding.
        """
        return self._decode([PhotoAnswer(n, "ok") for n in names], photos, max_bytes)

    def decoded_pixels(self, photos: list[bytes], max_bytes: int = MAX_PHOTO_BYTES) -> list[int]:
        """Pixels :meth:`decode` would decode for each photo, from its header alone (:func:`decoded_pixels`)."""
        return [decoded_pixels(b, self.shard_spec.width, self.shard_spec.height, max_bytes) for b in photos]

    def _decode(self, answers: list[PhotoAnswer], photos: list[bytes], max_bytes: int) -> DecodedPhotos:
        """Each photo framed and decoded for the backbone; a bad one gets its status in ``answers``.

        A photo whose answer is already not ``ok`` (a file that could not be read) is skipped.
        """
        out = DecodedPhotos(answers)
        spec = self.backbone.spec
        for i, data in enumerate(photos):
            if answers[i].status != "ok":
                continue
            problem = photo_problem(data, max_bytes)
            if problem is None:
                try:
                    out.framed.append(decode_for(spec, frame_photo(data, self.shard_spec)))
                    out.good.append(i)
                    continue
                except Exception as exc:  # noqa: BLE001 - every decoder failure is this photo's answer, not a crash
                    problem = _decode_problem(exc)
            answers[i].status, answers[i].error = problem
        return out

    def answer(self, photos: list[bytes], names: list[str], top_k: int = 3, max_bytes: int = MAX_PHOTO_BYTES) -> list[PhotoAnswer]:
        """Geolocate encoded photos one answer each: a bad photo gets its status, the others their predictions."""
        return self.answer_decoded(self.decode(photos, names, max_bytes), top_k)

    def answer_decoded(self, decoded: DecodedPhotos, top_k: int = 3) -> list[PhotoAnswer]:
        """The model half of :meth:`answer`: backbone, classifier and head over photos :meth:`decode` prepared."""
        answers, good = decoded.answers, decoded.good
        if good:
            X = self.embed(np.stack(decoded.framed))
            for i, pred in zip(good, self.predict_features(X, [answers[i].name for i in good], top_k), strict=True):
                answers[i].prediction = pred
        return answers

    def answer_place(
        self, photos: list[bytes], names: list[str], top_k: int = 3, max_bytes: int = MAX_PHOTO_BYTES, place: str = "place"
    ) -> PlaceAnswer:
        """Several photos of one place, one answer: the views' distributions combined (:func:`combine_views`).

        Each photo also gets its own answer, exactly as :meth:`answer` gives it
        (``PlaceAnswer.views``); a bad photo is left out of the place with its
        status, and a place with no readable photo has status ``no_readable_view``.
        """
        return self.answer_place_decoded(self.decode(photos, names, max_bytes), top_k, place)

    def predict_place(self, paths: list[str], top_k: int = 3, place: str = "place") -> PlaceAnswer:
        """:meth:`answer_place` for photo files: a file that is missing or no image is a view with status ``unreadable``."""
        views = [PhotoAnswer(str(p), "ok") for p in paths]
        photos: list[bytes] = []
        for view, path in zip(views, paths, strict=True):
            try:
                photos.append(read_photo(path))
            except ImageInputError as exc:
                view.status, view.error = "unreadable", str(exc)
                photos.append(b"")
        decoded = self._decode(views, photos, max([MAX_PHOTO_BYTES, *(len(b) for b in photos)]))
        return self.answer_place_decoded(decoded, top_k, place)

    def answer_place_decoded(self, decoded: DecodedPhotos, top_k: int = 3, place: str = "place") -> PlaceAnswer:
        """The model half of :meth:`answer_place`, over photos :meth:`decode` prepared."""
        views, good = decoded.answers, decoded.good
        if not good:
            why = "; ".join(f"{v.name}: {v.status}" for v in views) or "no photos given"
            return PlaceAnswer(place, "no_readable_view", f"no photo of the place could be read ({why})", None, views)
        preds, probs = self.predict_with_probs(self.embed(np.stack(decoded.framed)), [views[i].name for i in good], top_k)
        for i, pred in zip(good, preds, strict=True):
            views[i].prediction = pred
        (combined,) = self.predict_distributions(combine_views(probs)[None], [place], top_k)
        return PlaceAnswer(place, "ok", "", combined, views)

    def predict_paths(self, paths: list[str], top_k: int = 3) -> list[Prediction]:
        """Geolocate photo files (raises :class:`ImageInputError` for a bad one)."""
        photos = [read_photo(p) for p in paths]
        return self.predict_features(self.features(photos), [str(p) for p in paths], top_k)
