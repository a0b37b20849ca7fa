"""Turn decoded images into the normalised tensors a backbone expects.

Light to import (torch only inside :func:`normalise_batch`): decoding is the
same for training, ``predict`` and the server, and the answer path runs it
without PyTorch.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from worldnet.data.photos import to_rgb8
from worldnet.features.specs import BackboneSpec

if TYPE_CHECKING:
    import torch


def load_rgb(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Decode JPEG bytes straight to about ``size`` (h, w) using the decoder's draft mode.

    ``draft`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale, which is several times
    faster than decoding full size and then shrinking.
    """
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size[1], size[0]))
    return to_rgb8(img)  # 16-bit and float images by their real range (worldnet.data.photos), not clipped


#: A scaled JPEG decode within this share of the target size on each side is centre-cropped to it, not resampled.
CROP_SLACK = 0.02


def decode_to_input(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """JPEG bytes → uint8 HWC at ``size`` (h, w): libjpeg-turbo decodes straight to the smallest scale of
    1/8 … 8/8 that covers ``size`` (DCT-domain scaling, an area-like downsample).

    If that lands within :data:`CROP_SLACK` of ``size`` (a 300-px-high frame for a 224-px-high model decodes at
    6/8 to 225 px), the excess is centre-cropped, which costs nothing; otherwise the decoded image is resized
    (bilinear). Decoding at scale instead of decoding in full and resizing is 3× cheaper per photo for
    EfficientNet-Lite0, which keeps decoding from starving the model (``benchmarks/bench_features.py``).
    Images that are not JPEG (none in shards: the shard stage writes JPEG) take :func:`load_rgb`.
    """
    import simplejpeg

    h, w = size
    if not simplejpeg.is_jpeg(data):
        return _resized(load_rgb(data, size), size)
    arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=h, min_width=w)
    dh, dw = arr.shape[0] - h, arr.shape[1] - w
    if 0 <= dh <= CROP_SLACK * h and 0 <= dw <= CROP_SLACK * w:
        return np.ascontiguousarray(arr[dh // 2 : dh // 2 + h, dw // 2 : dw // 2 + w])
    return _resized(Image.fromarray(arr), size)


def _resized(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """``img`` at ``size`` (h, w), bilinear; uint8 HWC."""
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.array(img, dtype=np.uint8)


def decode_for(spec: BackboneSpec, data: bytes) -> np.ndarray:
    """JPEG bytes → uint8 array at the backbone's input size: the one decoding of training, predict and serving."""
    return decode_to_input(data, spec.input_size)


def to_array(img: Image.Image, spec: BackboneSpec) -> np.ndarray:
    """Resize to the backbone's input size; uint8 HWC (normalised later, in batches)."""
    return _resized(img, spec.input_size)


def normalise_batch(batch_u8: torch.Tensor, spec: BackboneSpec, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) normalised, channels-last in memory if asked.

    ``permute`` of an NHWC tensor *is* a channels-last NCHW tensor, so the
    float copy already has the layout the model wants; ``(x/255 - mean)/std``
    is then two in-place passes instead of four passes and two temporaries.
    """
    import torch

    dev = batch_u8.device
    std = torch.tensor(spec.std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    x = batch_u8.permute(0, 3, 1, 2).float()
    x.mul_(1.0 / (255.0 * std)).sub_(mean / std)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
