"""The commands that answer with a model: ``predict``, ``serve`` and ``predict-batch`` (registered by :mod:`flows.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from upath import UPath

    from worldnet.models.predictor import Predictor

from flows.cli_errors import fail, fail_environment, quiet_prefect_user_errors, store_file, user_error, user_errors
from flows.cli_options import EngineOption
from flows.guard import start_guard
from tasks.config import check_engine
from worldnet import defaults


def predict(
    images: Annotated[list[Path], typer.Argument(help="Photo files to geolocate.")],
    model: Annotated[
        str, typer.Option(help="A registry URI (models:/worldnet@champion) or a worldnet.pt file.")
    ] = "models:/worldnet@champion",
    root: Annotated[Path, typer.Option(help="Catalog root holding the MLflow store.")] = Path(defaults.ROOT),
    top_k: Annotated[int, typer.Option(help="How many clusters to list.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of text.")] = False,
    engine: EngineOption = "auto",
    place: Annotated[
        bool,
        typer.Option(
            "--place",
            help="The photos are views of one place: one answer from their combined distributions over the clusters "
            "(a normalised geometric mean), not one per photo. An unreadable photo is reported and left out.",
        ),
    ] = False,
) -> None:
    """Predict lat, lon, country and continent for photos, with the top clusters; with --place, once for all of them."""
    from worldnet.models.predictor import ImageInputError

    if top_k < 1:
        raise fail(f"--top-k {top_k}: list at least one cluster")
    try:
        check_engine(engine, "cpu")
        predictor, _ = load_predictor(model, root, engine)
    except user_errors() as exc:
        raise user_error(exc) from None
    if place:
        answer = predictor.predict_place([str(img) for img in images], top_k=top_k)
        for v in answer.views:
            if v.status != "ok":
                typer.echo(f"error: {v.error if v.status == 'unreadable' else f'{v.name}: {v.error}'}", err=True)
        if answer.prediction is None:
            typer.echo(f"error: {answer.error}", err=True)
        elif as_json:
            typer.echo(json.dumps(answer.as_dict()))
        else:
            p, used = answer.prediction, answer.used
            tops = ", ".join(f"{n} {q:.2f}" for n, q in p.top_clusters)
            typer.echo(
                f"place ({len(used)} of {len(answer.views)} photos: {', '.join(used)}): "
                f"{p.lat:.4f}, {p.lon:.4f}  {p.country} {p.continent}  top: {tops}"
            )
        raise typer.Exit(0 if len(answer.used) == len(answer.views) else 1)
    status = 0
    for img in images:
        try:
            p = predictor.predict_paths([str(img)], top_k=top_k)[0]
        except ImageInputError as exc:
            typer.echo(f"error: {exc}", err=True)
            status = 1
            continue
        if as_json:
            typer.echo(json.dumps(p.as_dict()))
        else:
            tops = ", ".join(f"{n} {q:.2f}" for n, q in p.top_clusters)
            typer.echo(f"{p.path}: {p.lat:.4f}, {p.lon:.4f}  {p.country} {p.continent}  top: {tops}")
    raise typer.Exit(status)


def load_predictor(model: str, root: Path, engine: str) -> tuple[Predictor, str]:
    """The predictor that answers ``predict`` and ``serve``, and its label (``worldnet v3 (@champion)``, or the file's name).

    ``auto`` and ``onnx``: the backbone's graph in ONNX Runtime, the classifier and head in numpy, and a registry URI
    resolved from the catalog's ``model_cache`` when the store still names the same bytes; neither PyTorch, MLflow nor
    Prefect is imported (:mod:`worldnet.models.fast`, :mod:`tasks.model_cache`). ``torch``: the path before, all PyTorch,
    the registry through MLflow.
    """
    from worldnet.catalog import Catalog
    from worldnet.models.fast import load_predictor

    graphs = Catalog.from_yaml(root).path("onnx_graphs")
    if engine == "torch":
        from worldnet.models.predictor import Predictor

        if model.startswith("models:/"):
            from tasks.tracking import registry_label, registry_model_file

            path, label = registry_model_file(model, root), registry_label(model)
        else:
            path, label = Path(model), Path(model).name
        return Predictor.load(path, engine="torch", graphs_dir=graphs), label
    from tasks.model_cache import cache_dir, resolve

    if model.startswith("models:/"):
        found = resolve(model, root)
        dirs: list[Path | UPath] = [found.graphs, graphs] if found.graphs is not None else [graphs]
        return load_predictor(found.model, engine=engine, graph_dirs=dirs, twin_dir=found.model.parent), found.label
    return load_predictor(model, engine=engine, graph_dirs=[graphs], twin_dir=cache_dir(root) / "twins"), Path(model).name


def serve(
    model: Annotated[
        str, typer.Option(help="What to serve: models:/worldnet@champion (default), models:/worldnet/3, or a worldnet .pt file.")
    ] = "models:/worldnet@champion",
    root: Annotated[Path, typer.Option(help="Catalog root holding the MLflow store (and the ONNX graph cache).")] = Path(defaults.ROOT),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for other hosts.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest photo accepted, MB.")] = 20.0,
    max_photos: Annotated[int, typer.Option(help="Most photos in one request.")] = 16,
    max_request_megapixels: Annotated[
        float,
        typer.Option(help="Most megapixels one request may decode, all its photos together (JPEGs count at their draft scale)."),
    ] = 100.0,
    engine: EngineOption = "auto",
    debug: Annotated[bool, typer.Option(help="Show the full traceback of an error.")] = False,
) -> None:
    """Serve a model over HTTP: POST /predict (multipart photos in 'file'), GET / (a page with a map), GET /health.

    The model is loaded once. Try it:  curl -F file=@photo.jpg http://127.0.0.1:8000/predict
    """
    import math

    from flows.serve import ServeLimits, serve

    try:
        check_engine(engine, "cpu")
        if not 0 < port < 65536:
            raise ValueError(f"--port {port} is not a port; choose 1-65535")
        if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
            raise ValueError(f"--max-upload-mb {max_upload_mb}: choose a finite number of MB > 0 (default 20)")
        if max_photos < 1:
            raise ValueError(f"--max-photos {max_photos}: accept at least 1 photo per request")
        if not (math.isfinite(max_request_megapixels) and max_request_megapixels > 0):
            raise ValueError(f"--max-request-megapixels {max_request_megapixels}: choose a finite number of megapixels > 0 (default 100)")
        check_port(host, port)  # before the model loads: a busy port is answered in a second
        predictor, label = load_predictor(model, root, engine)
    except user_errors() as exc:
        raise user_error(exc, debug) from None
    limits = ServeLimits(
        max_photo_bytes=int(max_upload_mb * 2**20), max_photos=max_photos, max_request_pixels=max(1, int(max_request_megapixels * 1e6))
    )
    typer.echo(f"serving {label} ({predictor.engine}) on http://{host}:{port}/  (POST /predict, GET /health; Ctrl-C stops)")
    serve(predictor, label, host=host, port=port, limits=limits)


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` and let it go, as the server will bind it (``SO_REUSEADDR``, every address ``host`` names).

    Raises:
        ValueError: The port is in use, needs privileges, or ``host`` is no address of this machine.
    """
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ValueError(f"--host {host} is not an address: give one such as 127.0.0.1, or 0.0.0.0 for other hosts") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's server does: IPv6 apart from IPv4
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ValueError(f"port {port} on {host} is in use: choose another --port") from None
                if exc.errno == errno.EACCES:
                    raise ValueError(f"port {port} on {host} needs privileges: choose a --port above 1023") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ValueError(f"--host {host} is not an address of this machine: try 127.0.0.1 or 0.0.0.0") from None
                raise ValueError(f"cannot listen on port {port} on {host} ({exc.strerror}): choose another --port or --host") from None


def predict_batch_cmd(
    photos: Annotated[
        Path, typer.Argument(help="Folder of photos (searched recursively: .jpg .jpeg .png .webp .avif .gif .bmp .tif; others are listed).")
    ],
    model: Annotated[str, typer.Option(help="A registry URI or a worldnet .pt file (path or fsspec URL).")] = "models:/worldnet@champion",
    root: Annotated[
        str, typer.Option(help="Catalog root (folder or fsspec URL the workers share); holds the MLflow store.")
    ] = defaults.ROOT,
    name: Annotated[
        str | None,
        typer.Option(
            help="Batch name: outputs go to {root}/06_predict/{name}, rebuilt for the photos given "
            "(default: the folder's name and a hash of its path)."
        ),
    ] = None,
    shard_size: Annotated[int, typer.Option(help="Photos per shard, i.e. per task.")] = 256,
    task_runner: Annotated[str, typer.Option(help="threads (this process) or dask.")] = "threads",
    dask_address: Annotated[str | None, typer.Option(help="With --task-runner dask: an existing scheduler.")] = None,
    dask_workers: Annotated[int | None, typer.Option(help="With --task-runner dask and no address: LocalCluster workers.")] = None,
    engine: EngineOption = "auto",
    by_folder: Annotated[
        bool,
        typer.Option(
            "--by-folder",
            help="Each immediate sub-folder of PHOTOS is one place, answered once from its photos (places.parquet); "
            "photos directly in PHOTOS keep one answer each.",
        ),
    ] = False,
    places: Annotated[
        Path | None,
        typer.Option(help="A CSV with columns path,place (paths relative to PHOTOS): each place answered once (places.parquet)."),
    ] = None,
) -> None:
    """Geolocate a whole folder of photos, one task per shard (on Dask if asked); writes a Parquet table.

    Photos that fail to decode are listed with the reason, and the rest are predicted. With --by-folder or --places,
    several photos of one place also get one answer, from their combined distributions over the clusters.
    """
    import re

    from flows.predict import default_batch_name, place_assignment, predict_batch
    from flows.runners import make_task_runner

    if shard_size < 1:
        raise fail(f"--shard-size {shard_size}: a shard holds at least one photo")
    batch = name or default_batch_name(photos)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", batch) or ".." in batch:
        raise fail(f"--name {batch!r} must be a plain name (letters, digits, '.', '_', '-'): outputs go to {{root}}/06_predict/NAME")

    try:
        runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:  # before Prefect starts: a wrong folder or model file is answered in a second
        from worldnet.models.batch import photo_table
        from worldnet.models.predictor import load_worldnet
        from worldnet.storage import is_local

        check_engine(engine, "cpu")
        if not model.startswith("models:/") and is_local(model):
            load_worldnet(model)
        place_assignment(str(photos), photo_table(photos)[0], by_folder, str(places) if places else None)
    except user_errors() as exc:
        raise user_error(exc) from None
    quiet_prefect_user_errors()
    start_guard()
    try:
        out = predict_batch.with_options(task_runner=runner)(
            str(photos), batch, model, root, shard_size, engine=engine, by_folder=by_folder, places=str(places) if places else None
        )
    except user_errors() as exc:
        raise user_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a full disk or missing credentials is one line; anything else re-raised
        raise fail_environment(exc, root, store_file(root), False) from None
    typer.echo(f"predicted {out['predicted']} of {out['photos']} photos -> {out['predictions']}")
    if "places_file" in out:
        empty = f", {out['places_without_views']} with no readable photo" if out["places_without_views"] else ""
        typer.echo(f"answered {out['places']} places{empty}; {out['unplaced']} photos in no place -> {out['places_file']}")
    if out["rejects"]:
        counts = ", ".join(f"{n} {r}" for r, n in out["reject_counts"].items())
        typer.echo(f"{out['rejects']} files not predicted ({counts}); see {out['rejects_file']}")
