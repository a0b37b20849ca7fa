"""A predictor for answers: the backbone's graph in ONNX Runtime, the classifier and head in numpy; no PyTorch.

``worldnet predict`` used to spend 10-14 s of a cold start importing torch,
torchvision and timm and building EfficientNet-Lite0 in PyTorch, only to run
the backbone's ONNX graph and two small MLPs. :func:`load_fast` loads the
same model from what the pipeline stores beside it:

* the model's numpy twin (``{stem}.npz``, :mod:`worldnet.models.numpy_model`),
  whose recorded sha256 must be the ``.pt``'s; a model saved before twins
  existed gets one made from its ``.pt`` (PyTorch, that once), stored in
  ``twin_dir``;
* the backbone's graph, found by name (:func:`~worldnet.features.onnx_graph.onnx_name`)
  in the folders given: the registry's shipped graph, the catalog's
  ``onnx_graphs``; where none is stored it is exported (PyTorch, that once)
  into the last folder, as :func:`~worldnet.features.engine.build_engine` does.

The :class:`~worldnet.models.predictor.Predictor` it returns answers exactly
as one from :meth:`Predictor.load <worldnet.models.predictor.Predictor.load>`
does (the same framing, decoding and statuses; features rounded to float16 on
both), within float32 rounding of the classifier and head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from upath import UPath

from worldnet.features.onnx_graph import OnnxBackbone, onnx_name, weights_fingerprint
from worldnet.features.specs import backbone_spec
from worldnet.models.numpy_model import NotATwinError, NumpyWorldNet, read_twin, twin_arrays, twin_path, write_twin
from worldnet.models.predictor import Predictor
from worldnet.storage import as_path

if TYPE_CHECKING:
    from worldnet.features.backbones import Backbone


def file_sha256(path: str | Path | UPath) -> str:
    """sha256 of a file's bytes (any backend)."""
    h = hashlib.sha256()
    with as_path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def twin_for(model: str | Path | UPath, twin_dir: str | Path | UPath | None = None) -> NumpyWorldNet:
    """The numpy twin of the model file ``model``: beside it, or in ``twin_dir``, or made from it (PyTorch, once).

    A twin counts only if it records this file's sha256. One made here is
    written to ``twin_dir`` (``{sha256[:16]}.npz``) when given, so the next
    process finds it; a model file's own folder is never written to.

    Raises:
        FileNotFoundError: No such model file.
        NotAModelError: The file is not a worldnet model.
    """
    p = as_path(model)
    if not p.is_file():
        raise FileNotFoundError(f"model file {model} not found: pass a worldnet .pt file or models:/worldnet@champion")
    sha = file_sha256(p)
    stored = as_path(twin_dir) / f"{sha[:16]}.npz" if twin_dir is not None else None
    for candidate in (twin_path(p), stored):
        if candidate is None or not candidate.is_file():
            continue
        try:
            twin = read_twin(candidate)
        except (NotATwinError, OSError):
            continue
        if twin.source_sha256 == sha:
            return twin
    from worldnet.models.predictor import _torch_load  # a model saved before twins existed: PyTorch reads it, this once

    blob = _torch_load(p)
    arrays = twin_arrays(blob, sha)
    if stored is not None:
        with contextlib.suppress(OSError):  # a read-only catalog: the twin is made again next time
            write_twin(stored, blob, sha)
    return NumpyWorldNet.from_arrays(json.loads(str(arrays.pop("meta"))), arrays)


def twin_file(model: str | Path | UPath, out_dir: str | Path | UPath) -> UPath:
    """A twin file of the model file ``model`` named ``{stem}.npz``: the one beside it if current, else written to ``out_dir``.

    What registration ships beside the ``.pt``, so a registered model answers
    without PyTorch (a model saved before twins existed gets one made here).
    """
    p = as_path(model)
    beside = twin_path(p)
    sha = file_sha256(p)
    try:
        if beside.is_file() and read_twin(beside).source_sha256 == sha:
            return beside
    except (NotATwinError, OSError):
        pass
    from worldnet.models.predictor import _torch_load

    return write_twin(as_path(out_dir) / beside.name, _torch_load(p), sha)


def answer_backbone(
    model: NumpyWorldNet,
    graph_dirs: Sequence[str | Path | UPath],
    weights: str | None = None,
    threads: int | None = None,
    model_path: str | Path | UPath | None = None,
) -> OnnxBackbone | Backbone:
    """The model's backbone as its stored ONNX graph (the first of ``graph_dirs`` holding it), session ready.

    With no graph stored, it is exported and checked once (PyTorch) into the
    last of ``graph_dirs`` (in memory if there is none), exactly as
    :func:`~worldnet.features.engine.build_engine` does; an export that fails
    its check runs in PyTorch, with a warning. A model with fine-tuned stages
    names its graph by its own fingerprint; exporting it reads the stages from
    the model file ``model_path``.
    """
    spec = backbone_spec(model.backbone, model.frame, model.view)
    tuned = model.weights_id is not None and weights is None
    name = onnx_name(spec, model.weights_id if tuned and model.weights_id else weights_fingerprint(model.backbone, weights))
    for folder in graph_dirs:
        path = as_path(folder) / name
        if path.is_file():
            backbone = OnnxBackbone(spec, path.read_bytes(), str(path), threads, spin=False)  # photos come one at a time
            backbone.single  # noqa: B018 - the session one photo runs in: made now, and a damaged graph fails at load
            return backbone
    from worldnet.features.engine import build_engine  # no graph stored yet: exported once, with PyTorch

    if tuned:
        from worldnet.models.predictor import finetuned_weights, load_worldnet

        if model_path is None:
            raise FileNotFoundError(f"no ONNX graph {name} stored for this fine-tuned model: pass its .pt file to export it")
        weights = finetuned_weights(load_worldnet(model_path)[0].finetuned)

    return build_engine(
        model.backbone,
        weights,
        model.frame,
        view=model.view,
        engine="onnx",
        device="cpu",
        graphs_dir=graph_dirs[-1] if graph_dirs else None,
        threads=threads,
    )


def load_fast(
    path: str | Path | UPath,
    weights: str | None = None,
    *,
    graph_dirs: Sequence[str | Path | UPath] = (),
    twin_dir: str | Path | UPath | None = None,
    threads: int | None = None,
) -> Predictor:
    """A :class:`~worldnet.models.predictor.Predictor` of the model file ``path`` on ONNX Runtime and numpy (see the module docs)."""
    model = twin_for(path, twin_dir)
    return Predictor(model, answer_backbone(model, graph_dirs, weights, threads, model_path=path), model.snap)


def load_predictor(
    path: str | Path | UPath,
    weights: str | None = None,
    *,
    engine: str = "auto",
    graph_dirs: Sequence[str | Path | UPath] = (),
    twin_dir: str | Path | UPath | None = None,
    threads: int | None = None,
) -> Predictor:
    """The predictor ``--engine`` asks for: ``auto`` and ``onnx`` answer on :func:`load_fast`, ``torch`` as before (all PyTorch).

    Raises:
        ValueError: An unknown engine.
    """
    from worldnet.features.names import resolve_engine

    if resolve_engine(engine, "cpu") == "torch":
        return Predictor.load(path, weights, engine="torch", graphs_dir=graph_dirs[-1] if graph_dirs else None, threads=threads)
    return load_fast(path, weights, graph_dirs=graph_dirs, twin_dir=twin_dir, threads=threads)


__all__ = ["answer_backbone", "file_sha256", "load_fast", "load_predictor", "twin_file", "twin_for"]
