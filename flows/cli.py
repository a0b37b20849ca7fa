"""The ``worldnet`` command line.

``worldnet demo`` generates the synthetic default world (if absent), runs the
whole pipeline under Prefect with MLflow tracking, and prints the paper's table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_answer import predict, predict_batch_cmd, serve
from flows.cli_checks import check_options
from flows.cli_errors import fail, fail_environment, quiet_prefect_user_errors, store_file, user_error, user_errors
from flows.cli_options import (
    DATA_ROOT_HELP,
    SYNTHETIC_INPUT_HEIGHT,
    BackboneOption,
    ClassifierOption,
    ClusterOption,
    CrossfitDecayOption,
    DatasetKindOption,
    DebugOption,
    EngineOption,
    FeaturePowerOption,
    FinetuneEpochsOption,
    FinetuneOption,
    FinetuneStagesOption,
    FlipOption,
    ImageSizeOption,
    InputHeightOption,
    KOption,
    MembersOption,
    RootOption,
    SeedOption,
    WeightsOption,
    pipeline_config,
)
from flows.env import apply_local_defaults
from flows.guard import start_guard
from tasks.config import STAGES, PipelineConfig, check_cv
from worldnet import defaults

apply_local_defaults()  # before anything imports Prefect or MLflow

#: The defaults every command shares, declared once: PipelineConfig's.
_D = PipelineConfig()

app = typer.Typer(
    help="worldnet: continuous GPS prediction from street-level photos (worldNET).", no_args_is_help=True, add_completion=False
)


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write Dataframes/ and Images/ into.")] = Path(defaults.SYNTHETIC_DATA),
    cities: Annotated[
        list[str] | None, typer.Option("--cities", help="City names (repeat the option); default: the 23 GSV-Cities.")
    ] = None,
    extra_cities: Annotated[bool, typer.Option(help="Add Sydney, Tokyo, Cape Town, ... for unseen-city experiments.")] = False,
    per_city: Annotated[int, typer.Option(help="Mean images per city (total = per_city × cities).")] = 100,
    size: Annotated[str, typer.Option(help="Image size WxH.")] = "400x300",
    seed: Annotated[int, typer.Option(help="Sampling seed; same arguments give byte-identical files.")] = 0,
    balanced: Annotated[bool, typer.Option(help="Same number of images per city (default: Eurocentric like GSV-Cities).")] = False,
    preview: Annotated[Path | None, typer.Option(help="Also write a contact sheet PNG (one row per city).")] = None,
) -> None:
    """Generate the synthetic GSV-Cities world (official layout, geography-driven scenes)."""
    from worldnet.data.cities import resolve_cities
    from worldnet.data.synthetic import MAX_SIDE, MIN_SIDE, SynthConfig, contact_sheet, generate

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise fail(f"--size must look like 400x300, got {size!r}") from None
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise fail(f"--size {size}: each side must be from {MIN_SIDE} to {MAX_SIDE} px")
    if per_city < 1:
        raise fail(f"--per-city {per_city}: give at least 1 image per city")
    try:
        resolve_cities(cities, extra=extra_cities)
    except ValueError as exc:
        raise fail(f"--cities: {exc}") from None
    try:
        s = generate(
            SynthConfig(
                out=out, cities=cities, extra_cities=extra_cities, per_city=per_city, size=(w, h), seed=seed, eurocentric=not balanced
            )
        )
    except user_errors() as exc:
        raise user_error(exc) from None
    typer.echo(f"wrote {s.n_images} images of {len(s.images_per_city)} cities to {out} in {s.seconds:.1f}s")
    if preview:
        typer.echo(f"contact sheet: {contact_sheet(out, preview)}")


def print_results(result: dict, root: Path) -> None:
    """The paper's tables, where the report and maps are, and how each stage went (``root``: the MLflow folder)."""
    if result.get("input"):
        typer.echo(result["input"])
    summary = result.get("evaluate") or {}
    titles = {"seen": "Figure 4a: unseen images of seen cities", "unseen": "Figure 4b: unseen images of unseen cities"}
    for proto, s in summary.items():
        typer.echo(f"\n{titles.get(proto, proto)}\n{s['table']}")
    rep = result.get("report") or {}
    if rep:
        typer.echo(f"\nreport: {rep.get('report')}\nmaps:   {rep.get('seen_map')}, {rep.get('unseen_map')}")
    if "register" in result:
        typer.echo(f"registry: worldnet v{result['register'].get('version')} {result['register'].get('decision')}")
    from tasks.tracking import user_tracking_uri

    uri = user_tracking_uri() or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    typer.echo(f"MLflow UI: mlflow ui --backend-store-uri {uri}")
    t, states = result.get("timings", {}), result.get("states", {})
    if t:
        shown = (f"{k} {v:.1f}s" + (f" ({states[k]})" if states.get(k) not in (None, "Completed") else "") for k, v in t.items())
        typer.echo("stages: " + ", ".join(shown))
    if result.get("restored"):
        typer.echo("restored from MLflow: " + ", ".join(result["restored"]))


def _execute(job: Callable[[], dict], root: str, debug: bool) -> dict:
    """Run ``job`` (a flow) as the CLI does: a user's error is one line (exit 2), a full disk or missing credentials too."""
    if not debug:
        quiet_prefect_user_errors()
    start_guard()
    try:
        return job()
    except user_errors() as exc:
        raise user_error(exc, debug) from None
    except Exception as exc:  # noqa: BLE001 - a full disk or missing credentials is one line; anything else re-raised
        raise fail_environment(exc, root, store_file(root), debug) from None


@app.command()
def run(
    data_root: Annotated[
        list[Path] | None,
        typer.Option(
            help=DATA_ROOT_HELP + " Default: the synthetic world (.worldnet/data/synthetic); with --only or --from, "
            "the data root the catalog root's records name.",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    root: RootOption = _D.root,
    only: Annotated[str | None, typer.Option(help="Run just this stage, reusing upstream artifacts.")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Run from this stage to the end.")] = None,
    dataset_kind: DatasetKindOption = _D.dataset_kind,
    backbone: BackboneOption = _D.backbone,
    weights: WeightsOption = None,
    head_mode: Annotated[
        str,
        typer.Option(
            help="Head reported as worldNET: auto (crossfit on seen cities, whose folds hold out places; in_sample on unseen "
            "cities; see docs/method.md), in_sample (the paper's) or crossfit. Both heads are always trained and printed."
        ),
    ] = _D.head_mode,
    crossfit_weight_decay: CrossfitDecayOption = None,
    cluster: ClusterOption = _D.cluster_strategy,
    k: KOption = _D.k,
    unseen: Annotated[list[str] | None, typer.Option(help="Cities held out for the unseen protocol (repeat); default 5 by seed.")] = None,
    strict: Annotated[bool, typer.Option(help="Fail if any input row is rejected (same report).")] = _D.strict,
    seed: SeedOption = _D.seed,
    device: Annotated[str, typer.Option(help="Feature extraction device: auto (CUDA if available) | cpu | cuda.")] = _D.device,
    engine: EngineOption = _D.engine,
    input_height: InputHeightOption = None,
    flip: FlipOption = _D.flip,
    finetune: FinetuneOption = _D.finetune,
    finetune_stages: FinetuneStagesOption = _D.finetune_stages,
    finetune_epochs: FinetuneEpochsOption = None,
    task_runner: Annotated[
        str, typer.Option(help="Where per-shard tasks run: threads (this process) or dask (a Dask cluster via prefect-dask).")
    ] = "threads",
    dask_address: Annotated[str | None, typer.Option(help="With --task-runner dask: an existing scheduler, e.g. tcp://HOST:8786.")] = None,
    dask_workers: Annotated[
        int | None, typer.Option(help="With --task-runner dask and no address: worker processes of a LocalCluster (default: cores).")
    ] = None,
    debias: Annotated[
        str,
        typer.Option(
            help="De-biasing: balance_continents (no continent over --debias-max-share; a one-continent dataset is kept whole), "
            "cap_per_city (at most --debias-cap photos per city) or none."
        ),
    ] = _D.debias_strategy,
    debias_cap: Annotated[int, typer.Option(help="cap_per_city: photos kept per city.")] = _D.debias_cap,
    debias_max_share: Annotated[
        float, typer.Option(help="balance_continents: the largest share any continent may keep.")
    ] = _D.debias_max_share,
    debias_max_drop: Annotated[
        float, typer.Option(help="Stop with an error if de-biasing would drop more than this share of the photos (1: allow anything).")
    ] = _D.debias_max_drop,
    image_size: ImageSizeOption = "auto",
    classifier: ClassifierOption = _D.classifier,
    members: MembersOption = _D.members,
    feature_power: FeaturePowerOption = _D.feature_power,
    wait_lock: Annotated[
        float, typer.Option(help="Seconds to wait when another run holds the catalog root (default: refuse at once).")
    ] = 0.0,
    debug: DebugOption = False,
) -> None:
    """Run the pipeline (or one stage of it) under Prefect with MLflow tracking.

    Stages: {stages}. The shard and extract_features stages map one task per shard, onto Dask workers with
    --task-runner dask.
    """
    options = dict(locals())
    options["data_root"] = data_root or [Path(defaults.SYNTHETIC_DATA)]
    forced = only is not None or from_stage is not None
    try:
        cfg = pipeline_config(options)
        check_options(cfg, only=only, from_stage=from_stage, data=not forced)
    except ValueError as exc:
        raise fail(str(exc)) from None
    from flows.pipeline import run_pipeline
    from flows.runners import make_task_runner

    try:
        runner = make_task_runner(task_runner, dask_address=dask_address, dask_workers=dask_workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    def job() -> dict:
        if data_root is None and forced:
            # a stage of a finished run: the data its ingest record names, not the default dataset
            from tasks.records import recorded_data_root

            recorded = recorded_data_root(root)
            if recorded is not None:
                cfg.data_root = recorded
                shown = recorded if isinstance(recorded, str) else ", ".join(recorded)
                typer.echo(f"data root: {shown} (as the ingest record under {root} says; --data-root to change it)")
        return run_pipeline(cfg, task_runner=runner, from_stage=from_stage, only=only, wait_lock=wait_lock)

    print_results(_execute(job, root, debug), cfg.tracking_root())


run.__doc__ = (run.__doc__ or "").replace("{stages}", ", ".join(STAGES))  # typer reads it when the CLI starts


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Where the synthetic data, artifacts and MLflow store go.")] = Path(_D.root),
    backbone: BackboneOption = _D.backbone,
    per_city: Annotated[int, typer.Option(help="Mean synthetic images per city.")] = 100,
) -> None:
    """Generate the synthetic world if absent, run the full pipeline, print the results."""
    from flows.pipeline import pipeline
    from worldnet.data.synthetic import SynthConfig, generate

    t0 = time.perf_counter()
    data = root / "data" / "synthetic"
    if not (data / "Dataframes").is_dir():
        typer.echo(f"generating the synthetic GSV-Cities world in {data} ...")
        generate(SynthConfig(out=data, per_city=per_city))
    # the rendered world's flat shapes and per-image noise read best at Lite0's ImageNet height (seen cities 290 km at
    # 224 px against 476 at 300, docs/method.md); real Street View reads best at the run default, 300
    options = {"data_root": data, "root": root, "backbone": backbone, "dataset_kind": "gsv_cities", "cluster": "city", "k": 23}
    cfg = pipeline_config({**options, "input_height": SYNTHETIC_INPUT_HEIGHT})
    result = _execute(lambda: pipeline(cfg), str(root), False)
    print_results(result, root)
    typer.echo(f"total {time.perf_counter() - t0:.0f}s; in stages {sum(result.get('timings', {}).values()):.0f}s")


@app.command()
def cv(
    data_root: Annotated[list[Path], typer.Option(help=DATA_ROOT_HELP, metavar="PATH")],
    dataset_kind: DatasetKindOption = _D.dataset_kind,
    root: RootOption = _D.root,
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group: Annotated[str, typer.Option(help="Keep each country or city in one fold: country | city.")] = "country",
    backbone: BackboneOption = _D.backbone,
    weights: WeightsOption = None,
    cluster: ClusterOption = _D.cluster_strategy,
    k: KOption = _D.k,
    head_mode: Annotated[
        str,
        typer.Option(
            help="Head reported as worldNET: crossfit (default here: every fold's test places are unseen, which is what the "
            "crossfit head is trained for) or in_sample (the paper's). Both rows are printed."
        ),
    ] = "crossfit",
    crossfit_weight_decay: CrossfitDecayOption = None,
    seed: SeedOption = _D.seed,
    image_size: ImageSizeOption = "auto",
    classifier: ClassifierOption = _D.classifier,
    members: MembersOption = _D.members,
    feature_power: FeaturePowerOption = _D.feature_power,
    engine: EngineOption = _D.engine,
    input_height: InputHeightOption = None,
    flip: FlipOption = _D.flip,
    finetune: FinetuneOption = _D.finetune,
    finetune_stages: FinetuneStagesOption = _D.finetune_stages,
    finetune_epochs: FinetuneEpochsOption = None,
    debug: DebugOption = False,
) -> None:
    """Grouped k-fold evaluation of every model; prints the paper's table.

    Images of each fold's countries (or cities) are never seen in training, so this is the unseen-places protocol for
    datasets too small for one split. Shards and features are the recorded stages of `worldnet run` on the same root
    (either reuses the other's). With fine-tuning, each fold fine-tunes its own backbone on its training photos only.
    """
    try:
        cfg = pipeline_config(dict(locals()))
        check_cv(group, folds)
        check_options(cfg, protocol="unseen")
    except ValueError as exc:
        raise fail(str(exc)) from None
    from flows.cv import cv_flow
    from worldnet.report import markdown_table, paper_table

    res = _execute(lambda: cv_flow(cfg, group=group, folds=folds), root, debug)
    if res.get("input"):
        typer.echo(res["input"])
    typer.echo(f"\n{folds}-fold cross-validation grouped by {group}: {res['images']} images, {res['groups']} {group} groups")
    typer.echo(paper_table(res["metrics"]) + "\n\n" + markdown_table(res["metrics"]))


app.command()(predict)
app.command()(serve)
app.command("predict-batch")(predict_batch_cmd)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
