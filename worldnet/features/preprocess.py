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

    Converting a whole batch at once is far cheaper than per image, and
    ``permute`` of an NHWC tensor *is* a channels-last NCHW tensor, so no copy.
    """
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    return x
