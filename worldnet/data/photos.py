"""Which files are photos: one answer for ingest, ``predict``, ``predict-batch`` and the server.

A photo is recognised by its first bytes, not its name: a PNG saved as
``.jpg`` is still a PNG, and every path decodes it the same way (see
:func:`worldnet.data.shards.frame_photo`). Folder listings go by suffix so
that a folder scan stays cheap, and list every file they leave out.

Decoding to what the model sees is here too, in one place for every path
(shards, ``predict``, the server, the feature loader): :func:`check_photo_size`
refuses a photo too small to be one, and :func:`to_rgb8` turns any mode Pillow
opens into 8-bit RGB by the image's real range (16-bit and float images are
scaled, never clipped to white or black). Both raise :class:`PhotoRejectedError`,
whose ``reason`` is the reject reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from worldnet import defaults

#: First bytes of each format Pillow decodes here (WebP and AVIF need a longer look, below).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

#: Bytes :func:`sniff_format` needs to see.
HEAD_BYTES = 16

#: Suffixes a folder listing takes as photos; anything else is listed as skipped.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff")


def sniff_format(head: bytes) -> str | None:
    """The image format that ``head`` (a file's first :data:`HEAD_BYTES` bytes) starts, or ``None``."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    return None


def describe_head(head: bytes) -> str:
    """Why ``head`` is not a photo, without echoing the file's bytes (they may be anything, e.g. a secret)."""
    if not head:
        return "zero bytes"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) == len(head)
    kind = "text" if printable else "binary data"
    return f"{kind} in no image format worldnet reads (JPEG, PNG, WebP, AVIF, GIF, BMP, TIFF)"


#: A photo narrower or lower than this many pixels is rejected (``image_too_small``): a 1×1 or a 10000×1 image
#: holds no scene, and framing would blow it up into a flat frame the model answers with confidence. 16 px, the
#: synthetic world's own floor (:mod:`worldnet.data.synthetic`), so tiny generated test worlds still pass.
MIN_SIDE = 16

#: Modes of 16-bit integer samples (Pillow's names): scaled by 1/257, so 65535 is 255.
_MODES_16 = ("I;16", "I;16L", "I;16B", "I;16N")


class PhotoRejectedError(ValueError):
    """A photo that decodes but that no stage should use; ``reason`` is its reject reason, ``detail`` the specifics."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def check_photo_size(img: Image.Image, min_side: int = MIN_SIDE) -> None:
    """Raise :class:`PhotoRejectedError` (``image_too_small``) if either side of ``img`` is under ``min_side`` px."""
    w, h = img.size
    if w < min_side or h < min_side:
        raise PhotoRejectedError("image_too_small", f"image is {w}x{h} px; a photo needs at least {min_side} px on each side")


def to_rgb8(img: Image.Image, fmt: str | None = None) -> Image.Image:
    """``img`` as 8-bit RGB, by its real range: what every path hands the model.

    * 8-bit modes (L, P, RGBA, CMYK, ...): Pillow's own conversion, unchanged.
    * 16-bit integer (``I;16*``, and ``I`` read from a PNG, whose samples are at most 16-bit): divided by 257.
    * 32-bit integer (``I``): stretched from its actual minimum to its maximum.
    * float (``F``): stretched from its actual minimum to its maximum; a NaN or infinite sample is rejected
      (:class:`PhotoRejectedError`, ``nonfinite_pixels``): no range would say what it means.

    Pillow's ``convert("RGB")`` instead clips these modes at 255, so a 16-bit photo became a white frame and a
    float one in [0, 1] a black one. A constant image maps to black. ``fmt``: the file's format, where ``img``
    no longer carries it (a copy, e.g. after ``ImageOps.exif_transpose``).
    """
    mode = img.mode
    if mode not in _MODES_16 and mode not in ("I", "F"):
        return img.convert("RGB")
    arr = np.asarray(img)
    if mode in _MODES_16 or (mode == "I" and (fmt or img.format) == "PNG"):  # Pillow before 11 reads 16-bit PNG as "I"
        gray = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255)
    else:
        x = arr.astype(np.float64)
        if mode == "F" and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).sum())
            raise PhotoRejectedError("nonfinite_pixels", f"float image ({img.width}x{img.height}) has {bad:,} NaN or infinite samples")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        gray = np.rint((x - lo) * (255.0 / (hi - lo))) if hi > lo else np.zeros_like(x)
    return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")


#: Files and folders that only a worldnet catalog root holds at its top: the root's identity and stage records
#: (``tasks/records.py``), the producers of its artifacts (``tasks/lineage.py``) and the MLflow store (``tasks/tracking.py``).
CATALOG_MARKERS = ("root_id.json", "_records", "producers.json", "mlflow.db")

#: The catalog's layer folders (``data_catalog/catalog.yml``); a folder holding two of them is a catalog root too.
CATALOG_LAYERS = ("01_raw", "02_intermediate", "03_features", "04_models", "05_reporting", "06_predict")

#: The default catalog root's name (``--root``): never a folder of the user's photos.
CATALOG_DEFAULT_NAME = defaults.ROOT


def is_catalog_root(folder: Path) -> bool:
    """Whether ``folder`` is a worldnet catalog root: named ``.worldnet``, or holding a marker of one
    (:data:`CATALOG_MARKERS`), or two of the catalog's layer folders (:data:`CATALOG_LAYERS`)."""
    if folder.name == CATALOG_DEFAULT_NAME or any((folder / m).exists() for m in CATALOG_MARKERS):
        return True
    return sum((folder / layer).is_dir() for layer in CATALOG_LAYERS) >= 2


@dataclass
class PhotoListing:
    """What :func:`scan_photos` found: photos, other files (listed as left out), and catalog roots it did not enter."""

    photos: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    catalogs: list[Path] = field(default_factory=list)


def scan_photos(folder: Path) -> PhotoListing:
    """Files under ``folder`` (recursively, sorted), split by suffix (:data:`PHOTO_SUFFIXES`) into photos and the rest.

    Hidden files (a leading dot, e.g. ``.DS_Store``) are skipped too, and listed. Worldnet catalog roots
    (:func:`is_catalog_root`, e.g. the default ``.worldnet`` inside the folder) are not entered at all: their
    charts are no photos of the user's, nor files the user left out; only the roots are returned (``catalogs``).
    ``folder`` itself being a catalog root lists nothing. Symlinked folders are not followed.
    """
    out = PhotoListing()
    if is_catalog_root(folder):
        out.catalogs.append(folder)
        return out
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            sub = here / d
            if not sub.is_symlink() and is_catalog_root(sub):
                out.catalogs.append(sub)
            else:
                keep.append(d)
        dirnames[:] = keep
        files.extend(p for name in filenames if (p := here / name).is_file())
    for p in sorted(files):
        (out.photos if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".") else out.skipped).append(p)
    out.catalogs.sort()
    return out


def list_photos(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(photos, skipped)`` under ``folder``: :func:`scan_photos` without the catalog roots it left out."""
    found = scan_photos(folder)
    return found.photos, found.skipped


__all__ = [
    "CATALOG_MARKERS",
    "HEAD_BYTES",
    "MIN_SIDE",
    "PHOTO_SUFFIXES",
    "PhotoListing",
    "PhotoRejectedError",
    "check_photo_size",
    "describe_head",
    "is_catalog_root",
    "list_photos",
    "scan_photos",
    "sniff_format",
    "to_rgb8",
]
