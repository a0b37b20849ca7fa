"""A backbone's exported graph in ONNX Runtime, light to import (no torch): what the answer path runs.

Exporting a graph needs PyTorch (:mod:`worldnet.features.engine`); running one
needs only ONNX Runtime and numpy. A graph is named by its backbone, weights,
input size and mirror averaging (:func:`onnx_name`), so a predictor that
knows its model's :class:`~worldnet.features.specs.BackboneSpec` finds the
graph an earlier export stored without building the backbone.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Any

import numpy as np

from worldnet.features.specs import BackboneSpec, efficientnet_lite_weights_path

#: Opset of the exported graphs (ONNX Runtime 1.16+ runs it).
OPSET = 17

#: Batches of this size run in a session with the batch dimension fixed (ONNX Runtime then plans every shape ahead:
#: Lite0 ran 110 instead of 135 ms per batch of 16 on 2 cores); the photos left over run one at a time in a session
#: fixed to one photo, which beat a dynamic batch of any size (Lite0 at 300×600 with its mirror, 2 cores, no
#: spinning: 43-52 against 59-72 ms a photo for 1 to 15 photos, same features; ``benchmarks/bench_onnx_session.py``).
FIXED_BATCH = 16


def weights_fingerprint(name: str, weights: str | None = None) -> str:
    """sha256 (first 12 hex digits) of the backbone's weights file; ``random`` for seeded random backbones.

    EfficientNet-Lite with fine-tuned last stages (``weights``: the ``finetune``
    stage's file) adds that file's digest, so its graph and features never pass
    for the pretrained backbone's. Digests are remembered per file size and
    mtime: a file rewritten in place is hashed again.
    """
    stamp = None
    if weights is not None and os.path.isfile(weights):
        st = os.stat(weights)
        stamp = (st.st_size, st.st_mtime_ns)
    return _fingerprint(name, None if weights is None else str(weights), stamp)


@lru_cache(maxsize=32)
def _fingerprint(name: str, weights: str | None, stamp: tuple[int, int] | None) -> str:
    if name.startswith("efficientnet_lite") and not name.endswith("_random"):
        base = _file_sha256(efficientnet_lite_weights_path(int(name[len("efficientnet_lite")])))[:12]
        return base if weights is None else f"{base}-ft{_file_sha256(weights)[:10]}"
    if name == "vgg19":
        from worldnet.features.backbones import vgg19_weights_path  # torch's hub folder: VGG19 only

        return _file_sha256(vgg19_weights_path(weights))[:12]
    return "random"


def bytes_fingerprint(name: str, finetuned: bytes) -> str:
    """:func:`weights_fingerprint` of ``name`` with fine-tuned stages held in memory (as a model file carries them)."""
    base = _fingerprint(name, None, None)
    return f"{base}-ft{hashlib.sha256(finetuned).hexdigest()[:10]}"


def _file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def onnx_name(spec: BackboneSpec, fingerprint: str) -> str:
    """File name of a backbone's graph: one per backbone, weights, input size and mirror averaging."""
    h, w = spec.input_size
    return f"{spec.name}-{fingerprint}-{h}x{w}{'-flip' if spec.flip else ''}-u8-opset{OPSET}.onnx"


def onnx_session(graph: bytes, threads: int | None = None, batch: int | None = None, spin: bool = True) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation and ``threads`` intra-op threads (default: every core).

    ``batch`` fixes the graph's batch dimension to that size (see :data:`FIXED_BATCH`). ``spin``: the intra-op threads
    busy-wait for the next run (ONNX Runtime's default), which suits batches run back to back; an answer path sets it
    off, because between two photos the threads would spin on the cores that frame and decode the next one (one photo
    at the 224-px view: 25-31 against 40-56 ms a photo on 2 cores, ``benchmarks/bench_predict.py``'s machine).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    if batch is not None:
        opts.add_free_dimension_override_by_name("batch", batch)
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxBackbone:
    """A backbone's graph in ONNX Runtime: ``(N, H, W, 3)`` uint8 images, as decoded → ``(N, dim)`` features.

    Full batches of :data:`FIXED_BATCH` go through a session specialised to
    that size; the rest (a last partial batch, the photos of one answer) one
    photo at a time through a session specialised to one photo. Each session
    is made on first use: a command that answers photos never builds the
    batch one. ``spin``: see :func:`onnx_session`.
    """

    def __init__(self, spec: BackboneSpec, graph: bytes, path: str, threads: int | None = None, spin: bool = True):
        self.spec, self.path, self._graph, self._threads, self._spin = spec, path, graph, threads, spin
        self._sessions: dict[int, Any] = {}

    def _session(self, batch: int) -> Any:
        if batch not in self._sessions:
            self._sessions[batch] = onnx_session(self._graph, self._threads, batch=batch, spin=self._spin)
        return self._sessions[batch]

    @property
    def fixed(self) -> Any:
        """The session that runs full batches of :data:`FIXED_BATCH`."""
        return self._session(FIXED_BATCH)

    @property
    def single(self) -> Any:
        """The session that runs one photo: an answer's, and each photo left over after the full batches."""
        return self._session(1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.uint8)
        full = len(x) - len(x) % FIXED_BATCH
        parts = [self.fixed.run(["features"], {"images": x[i : i + FIXED_BATCH]})[0] for i in range(0, full, FIXED_BATCH)]
        parts += [self.single.run(["features"], {"images": x[i : i + 1]})[0] for i in range(full, len(x))]
        if not parts:  # no photos, no run
            return np.zeros((0, self.spec.dim), np.float32)
        out: np.ndarray = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out


__all__ = ["FIXED_BATCH", "OPSET", "OnnxBackbone", "bytes_fingerprint", "onnx_name", "onnx_session", "weights_fingerprint"]
