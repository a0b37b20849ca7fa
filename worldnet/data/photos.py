"""Which files are photos: one answer for ingest, ``predict``, ``predict-batch`` and the server.

A photo is recognised by its first bytes, not its name: a PNG saved as
``.jpg`` is still a PNG, and every path decodes it the same way (see
:func:`worldnet.data.shards.frame_photo`). Folder listings go by suffix so
that a folder scan stays cheap, and list every file they leave out.
"""

from __future__ import annotations

from pathlib import Path

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


def list_photos(folder: Path) -> tuple[list[Path], list[Path]]:
    """Files under ``folder`` (recursively, sorted): ``(photos, skipped)`` by suffix (:data:`PHOTO_SUFFIXES`).

    Hidden files (a leading dot, e.g. ``.DS_Store``) are skipped too, and listed.
    """
    photos: list[Path] = []
    skipped: list[Path] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        (photos if p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".") else skipped).append(p)
    return photos, skipped


__all__ = ["HEAD_BYTES", "PHOTO_SUFFIXES", "describe_head", "list_photos", "sniff_format"]
