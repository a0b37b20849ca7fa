"""``worldnet serve``: a model behind a small HTTP API and a page a person can use (FastAPI on uvicorn).

    POST /predict   multipart photos in the field ``file`` (repeat it) → JSON, one answer per photo;
                    with ``place=1`` (query or form field) also one answer for them all, as views of one place
    GET  /          a page: drop or pick a photo, see it on a world map drawn offline
    GET  /health    the model version that answers, and its engine
    GET  /land.json the land outlines the page draws (Natural Earth, shipped with the project)

The model is loaded once, at start. Hostile input gets a 4xx status and a
one-line reason (never a stack trace, never a server path): see
:func:`status_for`. One bad photo among several gets its own status beside the
others' answers (HTTP 200); a request whose every photo fails gets that
failure's status.

A request is answered in two steps (:func:`decode_request`, then the model).
Decoding needs no model, so requests decode at once, each on a thread of its
own, and only the forward pass takes the model lock: a request of sixteen
huge PNGs never holds up someone else's one photo while it decodes. What one
request may decode is bounded (``ServeLimits.max_request_pixels``, read from
the photos' headers before any decoding: over it, 413), and after a large
request the freed heap goes back to the system (:func:`release_free_memory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from worldnet.models.predictor import MAX_PHOTO_BYTES, DecodedPhotos, PhotoAnswer, PlaceAnswer, Predictor

PAGE = Path(__file__).with_name("web") / "index.html"

#: HTTP status of a request whose every photo failed, by the first photo's status.
STATUS_CODES = {
    "empty": 400,
    "too_large": 413,
    "too_many_pixels": 413,
    "not_an_image": 415,
    "corrupt_image": 422,
    "image_too_small": 422,
    "nonfinite_pixels": 422,
}

#: Values of the ``place`` query parameter or form field, as the client may spell them (a checkbox sends ``on``).
PLACE_VALUES = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False, "": False}


#: Pixels one request may decode, by default (``worldnet serve --max-request-megapixels``): a 60 MP photo and then some,
#: or sixteen 6 MP PNGs; JPEGs count at the reduced scale they decode at (:func:`~worldnet.models.predictor.decoded_pixels`).
MAX_REQUEST_PIXELS = 100_000_000

#: A request that decoded at least this many pixels hands the freed heap back to the system when done (:func:`release_free_memory`).
TRIM_AFTER_PIXELS = 16_000_000

#: A photo that decodes to at least this many pixels (32 MB to Pillow) waits for one of ``ServeLimits.large_decodes``
#: slots, so concurrent requests never hold more than that many full-size decodings at once; smaller photos never wait.
LARGE_DECODE_PIXELS = 8_000_000


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry."""

    max_photo_bytes: int = MAX_PHOTO_BYTES
    max_photos: int = 16
    top_k: int = 3
    max_request_pixels: int = MAX_REQUEST_PIXELS
    large_decodes: int = 2


class ClientError(Exception):
    """A request this server refuses: ``status`` and a one-line ``reason``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def status_for(answers: list[PhotoAnswer]) -> int:
    """200 if any photo was answered; else the first failure's 4xx (:data:`STATUS_CODES`)."""
    if any(a.status == "ok" for a in answers):
        return 200
    return STATUS_CODES.get(answers[0].status, 400) if answers else 400


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another (musl, macOS)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    A full-size decoding is freed as soon as the photo is framed, but glibc
    keeps the pages in its per-thread arenas, so without this the server's
    resident memory would stay at the peak of its largest request.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def decode_request(
    predictor: Predictor, photos: list[bytes], names: list[str], limits: ServeLimits, large: threading.Semaphore | None = None
) -> DecodedPhotos:
    """A request's photos decoded for the model, without the model lock: requests decode at once, each on its own thread.

    A request whose photos would decode more than ``limits.max_request_pixels``
    (read from their headers) is refused, a 413 :class:`ClientError`, before any
    photo is decoded. Photos are decoded one at a time; one of
    :data:`LARGE_DECODE_PIXELS` or more first takes a slot of ``large`` (the
    app's ``limits.large_decodes``), which bounds the full-size decodings held
    at once across requests. After a request that decoded :data:`TRIM_AFTER_PIXELS`
    or more, the freed memory goes back to the system (:func:`release_free_memory`).
    """
    pixels = predictor.decoded_pixels(photos, limits.max_photo_bytes)
    if sum(pixels) > limits.max_request_pixels:
        raise ClientError(
            413,
            f"the photos would decode to {sum(pixels) / 1e6:.0f} megapixels, over this server's budget of "
            f"{limits.max_request_pixels / 1e6:g} megapixels per request; send fewer or smaller photos (JPEG decodes smaller)",
        )
    out = DecodedPhotos([])
    for i, (data, name, n) in enumerate(zip(photos, names, pixels, strict=True)):
        with large if large is not None and n >= LARGE_DECODE_PIXELS else contextlib.nullcontext():
            one = predictor.decode([data], [name], max_bytes=limits.max_photo_bytes)
        out.answers += one.answers
        out.framed += one.framed
        out.good += [i] * len(one.good)
    if sum(pixels) >= TRIM_AFTER_PIXELS:
        release_free_memory()
    return out


@lru_cache(maxsize=1)
def land_outlines(tolerance_deg: float = 0.2) -> list[list[list[float]]]:
    """Every country's outline as lon/lat rings, simplified for a page (Natural Earth 10m, shipped with the project).

    Computed once per process, when the server starts (about a second), so the first page draws at once.
    """
    from worldnet.geo.naturalearth import land_rings

    return [[[round(float(x), 2), round(float(y), 2)] for x, y in ring] for ring in land_rings(tolerance_deg)]


def create_app(predictor: Predictor, model_label: str, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The app serving ``predictor`` (already loaded: every request reuses it)."""
    app = FastAPI(title="worldnet", description="Continuous GPS prediction from a street-level photo (worldNET).")
    model_lock = threading.Lock()  # one forward pass at a time: each already uses every core (decoding takes no lock)
    large_decodes = threading.BoundedSemaphore(max(1, limits.large_decodes))  # full-size decodings held at once (LARGE_DECODE_PIXELS)
    page = PAGE.read_text()
    land_outlines()  # before the first request, not during it

    @app.exception_handler(ClientError)
    async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "the request does not match the API: see GET /docs"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # never a stack trace to a client
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_label, "engine": predictor.engine}

    @app.get("/land.json")
    async def land() -> JSONResponse:
        rings = await run_in_threadpool(land_outlines)
        return JSONResponse(rings, headers={"Cache-Control": "max-age=86400"})

    @app.post("/predict")
    async def predict(request: Request, top_k: int | None = None, place: str | None = None) -> JSONResponse:
        photos, names, place_field = await _read_photos(request, limits)
        k = max(1, min(top_k or limits.top_k, 10))
        as_place = _place_flag(place, "query parameter") or _place_flag(place_field, "form field")

        decoded = await run_in_threadpool(decode_request, predictor, photos, names, limits, large_decodes)
        del photos  # the encoded bytes (up to max_photos × max_photo_bytes): the model needs only the decoded arrays

        def run() -> list[PhotoAnswer] | PlaceAnswer:
            with model_lock:  # the forward pass only: decoding is done, outside the lock
                if as_place:
                    return predictor.answer_place_decoded(decoded, top_k=k)
                return predictor.answer_decoded(decoded, top_k=k)

        out = await run_in_threadpool(run)
        answers = out.views if isinstance(out, PlaceAnswer) else out
        body: dict[str, Any] = {"model": model_label, "engine": predictor.engine, "predictions": [a.as_dict() for a in answers]}
        if isinstance(out, PlaceAnswer):
            body["place"] = out.as_dict(views=False)
        code = status_for(answers)
        if code != 200:
            body["error"] = f"{answers[0].name}: {answers[0].error}"
        return JSONResponse(body, status_code=code)

    return app


def _place_flag(value: str | None, where: str) -> bool:
    """Whether the ``place`` value asks for one answer for all photos; a :class:`ClientError` if it is no yes or no."""
    if value is None:
        return False
    flag = PLACE_VALUES.get(value.strip().lower())
    if flag is None:
        raise ClientError(400, f"the place {where} is 1 (the photos are one place) or 0, not {value[:20]!r}")
    return flag


async def _read_photos(request: Request, limits: ServeLimits) -> tuple[list[bytes], list[str], str | None]:
    """The uploaded photos, their names and the ``place`` form field, or a :class:`ClientError` that says what is wrong."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ClientError(415, "send photos as multipart/form-data in the field 'file' (curl -F file=@photo.jpg URL/predict)")
    length = request.headers.get("content-length")
    budget = limits.max_photos * (limits.max_photo_bytes + 64 * 1024)
    if not (length and length.isdigit()):  # the size must be known before a byte is spooled
        raise ClientError(411, "send a Content-Length header (curl and browsers do for file uploads)")
    if int(length) > budget:
        raise ClientError(413, f"the request is {int(length) / 2**20:.0f} MB, over {budget / 2**20:.0f} MB")
    try:
        form = await request.form(max_files=limits.max_photos + 1, max_fields=32, max_part_size=64 * 1024)
    except Exception as exc:  # noqa: BLE001 - Starlette raises several types for a bad body; all are the client's
        reason = str(exc).splitlines()[0][:160] if str(exc) else "malformed multipart body"
        too_many = "Too many files" in reason
        raise ClientError(
            413 if too_many else 400, f"at most {limits.max_photos} photos per request" if too_many else f"bad multipart body: {reason}"
        ) from None
    files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
    if not files:
        raise ClientError(400, "no photo: send it in the multipart field 'file'")
    if len(files) > limits.max_photos:
        raise ClientError(413, f"{len(files)} photos in one request; at most {limits.max_photos} photos per request")
    place = form.get("place")
    if place is not None and not isinstance(place, str):
        raise ClientError(400, "the place field is a form value (1 or 0), not a file")
    photos, names = [], []
    for i, f in enumerate(files):
        data = await f.read(limits.max_photo_bytes + 1)
        photos.append(data)
        names.append(Path(f.filename or f"photo-{i + 1}").name[:200])
    await form.close()
    return photos, names, place


def serve(predictor: Predictor, model_label: str, *, host: str, port: int, limits: ServeLimits) -> None:  # pragma: no cover - blocks
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(create_app(predictor, model_label, limits), host=host, port=port, log_level="warning", access_log=False)


__all__ = [
    "MAX_REQUEST_PIXELS",
    "STATUS_CODES",
    "ClientError",
    "ServeLimits",
    "create_app",
    "decode_request",
    "land_outlines",
    "release_free_memory",
    "serve",
    "status_for",
]
