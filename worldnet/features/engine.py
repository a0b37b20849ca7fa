"""Inference engines for the backbone: ONNX Runtime on CPU (the default there), PyTorch on CUDA and as the fallback.

The same EfficientNet-Lite0 runs about 1.5× faster per batch in ONNX Runtime
than in PyTorch eager on this project's 2-core machine (``benchmarks/bench_features.py``
prints the ratio, measured interleaved). The graph is exported once per
backbone, weights and input size (:func:`onnx_name`), checked against PyTorch
on a fixed batch when first exported (:data:`ONNX_TOLERANCE`), and reused
from then on. Export needs no network: the weights are already here.

Features from the two engines are interchangeable (cosine > 0.9999 per image;
``tests/features/test_engine.py``), so a model trained on one serves on the other.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from upath import UPath

from worldnet.features.backbones import Backbone, BackboneSpec, build_backbone, resolve_device
from worldnet.features.names import ENGINES, View, resolve_engine
from worldnet.features.onnx_graph import FIXED_BATCH, OPSET, OnnxBackbone, onnx_name, onnx_session, weights_fingerprint
from worldnet.features.preprocess import normalise_batch
from worldnet.io import write_bytes_atomic
from worldnet.storage import as_path

#: An exported graph is used only if, on a fixed batch, ``max|onnx - torch| <= ONNX_TOLERANCE * max(1, max|torch|)``.
ONNX_TOLERANCE = 1e-4


class EngineMismatchError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond :data:`ONNX_TOLERANCE` (it is not used)."""


class _Pooled(torch.nn.Module):
    """The backbone as exported: uint8 NHWC images in (as decoded), normalised inside the graph, pooled features out.

    Normalising in the graph spares the caller a float copy of every batch; ONNX
    Runtime fuses it into the first convolution's input.
    """

    def __init__(self, backbone: torch.nn.Module, spec: BackboneSpec):
        super().__init__()
        self.backbone = backbone
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() * self.scale - self.shift
        out: torch.Tensor = self.backbone(x)
        return out


def export_onnx(backbone: Backbone) -> bytes:
    """The backbone (uint8 NHWC in, pooled features out, any batch size, its spec's input size) as an ONNX graph, in memory."""
    return export_module(backbone, backbone.spec)


def export_module(net: torch.nn.Module, spec: BackboneSpec) -> bytes:
    """``net`` fed as a backbone of ``spec`` is fed (uint8 NHWC in, normalised in the graph), its output named ``features``.

    A whole backbone exports this way, and so do its frozen early stages, which fine-tuning runs once per photo.
    """
    h, w = spec.input_size
    # the wrapper is put in eval mode too: the exporter restores the wrapper's mode on exit, recursively,
    # and a wrapper left in training mode would switch the caller's batch norms to batch statistics
    model = _Pooled(net.cpu().eval(), spec).eval()
    with tempfile.TemporaryDirectory(prefix="worldnet-onnx-") as d, torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (exact here, no onnxscript); its deprecation notice is noise to a user
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        out = Path(d) / "graph.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, h, w, 3, dtype=torch.uint8),),
            out,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: exact for these CNNs, and needs no onnxscript
        )
        return out.read_bytes()


def check_batch(spec: BackboneSpec, n: int = 4) -> np.ndarray:
    """The fixed batch an export is checked on: uint8 NHWC noise, the same on every machine."""
    h, w = spec.input_size
    return np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def onnx_error(backbone: Backbone, engine: OnnxBackbone) -> float:
    """``max|onnx - torch| / max(1, max|torch|)`` on :func:`check_batch`."""
    x = check_batch(backbone.spec)
    with torch.inference_mode():
        want = backbone.cpu().eval()(normalise_batch(torch.from_numpy(x), backbone.spec, channels_last=False)).float().numpy()
    got = engine(x)
    return float(np.abs(got - want).max() / max(1.0, float(np.abs(want).max())))


def onnx_backbone(backbone: Backbone, graphs_dir: str | Path | UPath | None, fingerprint: str, threads: int | None = None) -> OnnxBackbone:
    """The backbone in ONNX Runtime, from ``graphs_dir`` if exported before, else exported, checked and stored there.

    ``graphs_dir=None`` exports and checks in memory, storing nothing (about 3 s for Lite0).

    Raises:
        EngineMismatchError: A fresh export disagrees with PyTorch (it is not stored).
    """
    name = onnx_name(backbone.spec, fingerprint)
    path = as_path(graphs_dir) / name if graphs_dir is not None else None
    if path is not None and path.is_file():
        cached = OnnxBackbone(backbone.spec, path.read_bytes(), str(path), threads)
        cached.fixed  # noqa: B018 - a damaged stored graph fails here, at load, not at the first batch
        return cached
    graph = export_onnx(backbone)
    engine = OnnxBackbone(backbone.spec, graph, str(path or f"<memory>/{name}"), threads)
    err = onnx_error(backbone, engine)
    if err > ONNX_TOLERANCE:
        raise EngineMismatchError(
            f"the ONNX export of {backbone.spec.name} differs from PyTorch by {err:.2e} (tolerance {ONNX_TOLERANCE:.0e}); "
            "use --engine torch"
        )
    if path is not None:
        write_bytes_atomic(path, graph)
    return engine


def build_engine(
    name: str,
    weights: str | None = None,
    frame: tuple[int, int] | None = None,
    *,
    view: View | None = None,
    engine: str = "auto",
    device: str = "auto",
    flat: bool = False,
    graphs_dir: str | Path | UPath | None = None,
    threads: int | None = None,
) -> Backbone | OnnxBackbone:
    """The backbone ``name`` ready to embed photos framed ``frame`` and seen as ``view``, on the engine ``engine`` resolves to.

    PyTorch serves where ONNX Runtime cannot: CUDA, flat (unpooled) features,
    and an export that fails its check (a warning says so).
    """
    backbone = build_backbone(name, weights, frame, view)
    dev = resolve_device(device).type
    if resolve_engine(engine, dev) == "torch" or flat:
        return backbone
    try:
        return onnx_backbone(backbone, graphs_dir, weights_fingerprint(name, weights), threads)
    except EngineMismatchError as exc:
        warnings.warn(f"{exc}; running PyTorch instead", stacklevel=2)
        return backbone


__all__ = [
    "ENGINES",
    "OPSET",
    "FIXED_BATCH",
    "build_engine",
    "resolve_engine",
    "ONNX_TOLERANCE",
    "EngineMismatchError",
    "OnnxBackbone",
    "export_module",
    "export_onnx",
    "onnx_backbone",
    "onnx_error",
    "onnx_name",
    "onnx_session",
    "weights_fingerprint",
]
