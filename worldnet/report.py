"""The results report: the paper's Figure 4a/4b tables plus the field's columns, and plots."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from upath import UPath

from worldnet.evaluate import ProtocolResult
from worldnet.geo.regions import CONTINENTS
from worldnet.io import write_text_atomic, write_with_atomic
from worldnet.protocol import PROTOCOL_TITLES
from worldnet.storage import as_path

if TYPE_CHECKING:
    from matplotlib.path import Path as MplPath


def paper_table(metrics: pl.DataFrame) -> str:
    """The paper's fixed-width table: model, mean distance in metres, share under 1,000 km."""
    lines = [f"  {'':<28}{'mean distance':>16}{'<1,000km':>11}", " " + "-" * 28 + " " + "-" * 15 + " " + "-" * 9]
    for r in metrics.iter_rows(named=True):
        lines.append(f"  {r['model']:<28}{round(r['mean_km'] * 1000):>14} m{r['acc_1000km']:>11.4f}")
    return "\n".join(lines)


def markdown_table(metrics: pl.DataFrame) -> str:
    """Paper columns first, then median, CI, standard thresholds, continent accuracy, GeoScore."""
    head = (
        "| model | mean distance | <1,000km | median km | mean km (95% CI) "
        "| 1 km | 25 km | 200 km | 750 km | 2500 km | continent | GeoScore |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r['model']} | {round(r['mean_km'] * 1000):,} m | {r['acc_1000km']:.3f} | {r['median_km']:,.0f} | "
        f"{r['mean_km']:,.0f} ({r['mean_km_lo']:,.0f}–{r['mean_km_hi']:,.0f}) | {r['acc_1km']:.3f} | {r['acc_25km']:.3f} | "
        f"{r['acc_200km']:.3f} | {r['acc_750km']:.3f} | {r['acc_2500km']:.3f} | {r['continent_acc']:.3f} | {r['geoscore']:,.0f} |"
        for r in metrics.iter_rows(named=True)
    ]
    return "\n".join([head, *rows])


def write_report(
    results: list[ProtocolResult], out_dir: str | Path | UPath, *, n_map: int = 150, seed: int = 0, input_line: str | None = None
) -> dict[str, UPath]:
    """Write report.md, metrics.csv and the plots (to a folder or fsspec URL); returns the paths by name.

    ``input_line`` (see :class:`worldnet.data.ingest.InputSummary`) opens the
    report, so a reader sees what the figures rest on and what was left out.
    """
    out = as_path(out_dir)
    paths: dict[str, UPath] = {}
    md = ["# worldnet results", ""]
    if input_line:
        md += [input_line, ""]
    figure = {"seen": "4a", "unseen": "4b"}
    for r in results:
        md += [f"## Figure {figure.get(r.protocol, '')}: {PROTOCOL_TITLES[r.protocol]}", "", "```text", paper_table(r.metrics), "```", ""]
        md += [markdown_table(r.metrics), ""]
        md += [
            f"worldNET classifier: validation accuracy {r.classifier.get('val_accuracy', 0):.3f}, "
            f"train accuracy {r.classifier.get('train_accuracy', 0):.3f}; head mode `{r.worldnet.mode}`; "
            f"land snapping moved {int(r.snap.get('snapped', 0))} predictions "
            f"(mean {r.snap.get('snap_mean_km', 0):.1f} km, max {r.snap.get('snap_max_km', 0):.1f} km).",
            "",
            f"![map]({r.protocol}_map.png) ![cdf]({r.protocol}_cdf.png) ![confusion]({r.protocol}_confusion.png)",
            "",
        ]
        paths[f"{r.protocol}_map"] = plot_map(r, out / f"{r.protocol}_map.png", n=n_map, seed=seed)
        paths[f"{r.protocol}_cdf"] = plot_cdf(r, out / f"{r.protocol}_cdf.png")
        paths[f"{r.protocol}_confusion"] = plot_confusion(r, out / f"{r.protocol}_confusion.png")
    all_metrics = pl.concat([r.metrics.with_columns(protocol=pl.lit(r.protocol)) for r in results])
    write_with_atomic(out / "metrics.csv", lambda tmp: all_metrics.write_csv(tmp))
    write_text_atomic(out / "report.md", "\n".join(md))
    paths["report"] = out / "report.md"
    paths["metrics_csv"] = out / "metrics.csv"
    return paths


def _save(fig: object, path: Path | UPath) -> UPath:
    import matplotlib.pyplot as plt

    write_with_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return as_path(path)


@functools.cache
def land_path() -> MplPath:
    """Every country's outline (:func:`worldnet.geo.naturalearth.land_rings`) as one compound path: a map's land.

    One path, built once and added to each panel as a single patch, draws in
    milliseconds; GeoPandas' ``plot`` built a patch per polygon and redrew the
    whole figure after each panel, which made the report most of a small
    pipeline run.
    """
    from matplotlib.path import Path as MplPath

    from worldnet.geo.naturalearth import land_rings

    return MplPath.make_compound_path(*(MplPath(r, closed=True) for r in land_rings()))


def plot_map(result: ProtocolResult, path: Path | UPath, *, n: int = 150, seed: int = 0) -> UPath:
    """World map per model: truth → prediction segments for a sample of test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch

    models = result.metrics["model"].to_list()
    cols = 2
    rows = (len(models) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.9 * rows))
    ids = result.predictions["image_id"].unique().sort()
    rng = np.random.default_rng(seed)
    pick = set(ids.gather(rng.choice(len(ids), min(n, len(ids)), replace=False)).to_list())
    mean_km = dict(zip(models, result.metrics["mean_km"].to_list(), strict=True))
    for ax, model in zip(np.ravel(axes), models, strict=False):
        # add_artist, not add_patch: the limits are set below, and walking the outline for them took longer than drawing it
        ax.add_artist(PathPatch(land_path(), facecolor="#e6e6e6", edgecolor="#bbbbbb", linewidth=0.2))
        p = result.predictions.filter((pl.col("model") == model) & pl.col("image_id").is_in(list(pick)))
        segments = np.stack([p.select("true_lon", "true_lat").to_numpy(), p.select("lon", "lat").to_numpy()], axis=1)
        ax.add_collection(LineCollection(list(segments), colors="#d62728", alpha=0.25, linewidths=0.6))
        ax.scatter(p["true_lon"], p["true_lat"], s=6, color="#1f77b4", zorder=3)
        ax.scatter(p["lon"], p["lat"], s=6, color="#d62728", zorder=3)
        ax.set_title(f"{model}: mean {mean_km[model]:,.0f} km", fontsize=9)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 80)
        ax.set_axis_off()  # longitude/latitude are the map itself: no axis labels, no ticks
    for ax in np.ravel(axes)[len(models) :]:
        ax.axis("off")
    handles = [
        Line2D([], [], marker="o", linestyle="", color="#1f77b4", markersize=4, label="true location"),
        Line2D([], [], marker="o", linestyle="", color="#d62728", markersize=4, label="prediction"),
        Line2D([], [], color="#d62728", alpha=0.5, linewidth=1, label="error"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.985))
    fig.suptitle(f"{PROTOCOL_TITLES[result.protocol]} ({len(pick)} test photos)", y=1.0, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, path)


def plot_cdf(result: ProtocolResult, path: Path | UPath) -> UPath:
    """Error CDF, one curve per model, log-distance axis with the standard thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in result.metrics["model"].to_list():
        km = np.sort(result.predictions.filter(pl.col("model") == model)["km"].to_numpy())
        ax.plot(np.maximum(km, 0.1), np.arange(1, len(km) + 1) / len(km), label=model)
    for t in (1, 25, 200, 750, 2500):
        ax.axvline(t, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("error (km)")
    ax.set_ylabel("fraction of test images")
    ax.legend(fontsize=7)
    ax.set_title(PROTOCOL_TITLES[result.protocol], fontsize=9)
    return _save(fig, path)


def plot_confusion(result: ProtocolResult, path: Path | UPath) -> UPath:
    """Continent confusion matrix of worldNET (rows: truth, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result.predictions.filter(pl.col("model") == "worldNET")
    names = list(CONTINENTS)
    idx = {c: i for i, c in enumerate(names)}
    m = np.zeros((len(names), len(names)), dtype=int)
    for t, q in zip(p["true_continent"].to_list(), p["continent"].to_list(), strict=True):
        m[idx[t], idx[q]] += 1
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted continent")
    ax.set_ylabel("true continent")
    ax.set_title(f"worldNET continents — {result.protocol} cities", fontsize=9)
    return _save(fig, path)
