"""Turn decoded images into the normalised tensors a backbone expects."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from worldnet.features.backbones import BackboneSpec


def load_rgb(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Decode JPEG bytes straight to about ``size`` (h, w) using the decoder's draft mode.

    ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, which is several times
    faster than decoding full size and then shrinking.
    """
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size[1], size[0]))
    return img.convert("RGB")


def to_array(img: Image.Image, spec: BackboneSpec) -> np.ndarray:
    """Resize to the backbone's input size; uint8 HWC (normalised later, in batches)."""
    h, w = spec.input_size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(img, dtype=np.uint8)


def normalise_batch(batch_u8: torch.Tensor, spec: BackboneSpec, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) normalised, channels-last in memory if asked.

    ``permute`` of an NHWC tensor *is* a channels-last NCHW tensor, so the
    float copy already has the layout the model wants; ``(x/255 - mean)/std``
    is then two in-place passes instead of four passes and two temporaries.
    """
    dev = batch_u8.device
    std = torch.tensor(spec.std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    x = batch_u8.permute(0, 3, 1, 2).float()
    x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
