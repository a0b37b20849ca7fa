"""The report's maps: a land background drawn as one path, and a panel per model with its errors."""

from __future__ import annotations

import numpy as np
import polars as pl
from PIL import Image

from worldnet.evaluate import ProtocolResult
from worldnet.report import land_path, plot_map


def test_the_land_background_covers_the_continents_and_not_the_oceans():
    path = land_path()
    land = [(-3.7, 40.4), (36.8, -1.3), (134.0, -25.0), (-47.9, -15.8), (-100.0, 40.0), (100.0, 60.0)]  # Madrid … Siberia
    sea = [(-30.0, 30.0), (-150.0, 0.0), (80.0, -30.0), (-40.0, -40.0)]  # Atlantic, Pacific, Indian, South Atlantic
    assert all(path.contains_point(p) for p in land)
    assert not any(path.contains_point(p) for p in sea)
    assert land_path() is path  # built once per process


def test_a_map_has_a_panel_per_model(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    true = np.column_stack([rng.uniform(-50, 60, n), rng.uniform(-120, 140, n)])
    preds = pl.concat(
        pl.DataFrame(
            {
                "image_id": [f"i{i}" for i in range(n)],
                "model": [model] * n,
                "lat": true[:, 0] + rng.normal(0, shift, n),
                "lon": true[:, 1] + rng.normal(0, shift, n),
                "true_lat": true[:, 0],
                "true_lon": true[:, 1],
            }
        )
        for model, shift in (("mean model", 30.0), ("worldNET", 3.0), ("nn classifier", 10.0))
    )
    metrics = pl.DataFrame({"model": ["mean model", "worldNET", "nn classifier"], "mean_km": [4000.0, 300.0, 1100.0]})
    result = ProtocolResult("seen", preds, metrics, None, pl.DataFrame())  # type: ignore[arg-type]
    out = plot_map(result, tmp_path / "map.png", n=25)
    with Image.open(out) as im:
        w, h = im.size
    assert w > 1000 and 500 < h < 1200  # two rows of two panels (the fourth left empty) at 110 dpi
