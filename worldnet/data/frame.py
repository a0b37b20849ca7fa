"""A photo framed as every stage sees it, light to import (Pillow only): the shard stage, ``predict`` and the server share it.

:func:`frame_photo` is what the shard stage stores; the answer path runs the
same function, without the shard stage's Parquet and process pools, so a photo
given to ``predict`` is framed exactly as the training photos were.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from worldnet.data.photos import HEAD_BYTES, check_photo_size, describe_head, sniff_format, to_rgb8

#: Refuse images above this many pixels (decompression bombs).
MAX_PIXELS = 60_000_000


@dataclass(frozen=True)
class ShardSpec:
    """How shards are cut and encoded."""

    shard_size: int = 256
    width: int = 400
    height: int = 300
    quality: int = 90


def decode_resize(data: bytes, width: int, height: int) -> Image.Image:
    """Decode photo bytes (any format of :func:`~worldnet.data.photos.sniff_format`), cover ``width``×``height``, centre-crop."""
    if sniff_format(data[:HEAD_BYTES]) is None:
        raise ValueError(describe_head(data[:HEAD_BYTES]))
    img: Image.Image = Image.open(io.BytesIO(data))
    fmt = img.format
    if img.width * img.height > MAX_PIXELS:
        raise ValueError(f"image is {img.width}x{img.height}, over the {MAX_PIXELS:,}-pixel limit")
    check_photo_size(img)  # a 1x1 or 10000x1 image is no photo: rejected (image_too_small), never blown up to a frame
    scale = max(width / img.width, height / img.height)
    img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))  # JPEG: decoded at 1/2..1/8 scale
    # Other formats decode at full size (a 56 MP PNG is 224 MB to Pillow): keep that one copy only, and shrink it next.
    ImageOps.exif_transpose(img, in_place=True)  # a phone photo stored sideways is seen upright, as in predict; never copied
    if img.mode != "RGB":  # convert("RGB") of an RGB image would be a second full-size copy, with the same pixels
        img = to_rgb8(img, fmt)  # 16-bit and float photos by their real range, not clipped to white or black
    img.load()
    scale = max(width / img.width, height / img.height)
    rw, rh = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (rw - width) // 2, (rh - height) // 2
    return img.crop((left, top, left + width, top + height))


def frame_photo(data: bytes, spec: ShardSpec) -> bytes:
    """A photo as every stage sees it: upright (EXIF), RGB, covering the frame, centre-cropped, JPEG at ``spec.quality``.

    The shard stage stores this; ``predict`` and any server run the same
    function, so a photo gives the same features on every path.
    """
    img = decode_resize(data, spec.width, spec.height)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=spec.quality)
    return buf.getvalue()


__all__ = ["MAX_PIXELS", "ShardSpec", "decode_resize", "frame_photo"]
