"""Train/validation/test splits for the paper's two protocols.

* ``seen``: unseen images of seen cities. Within every city, whole places go to
  one side (photos of one spot never straddle train and test).
* ``unseen``: images of unseen cities. Whole cities are held out for test
  (a given list, or ``k`` drawn by seed); validation is by place among the rest.

Both land in one table (``image_id, seen, unseen``), values train/val/test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

SPLITS = ("train", "val", "test")


def _place_key(df: pl.DataFrame) -> pl.Expr:
    # where no place id is given, photos taken at the very same coordinates (to ~0.1 m) are one place
    spot = pl.format("@{},{}", pl.col("lat").round(6), pl.col("lon").round(6)) if {"lat", "lon"} <= set(df.columns) else None
    image = spot if spot is not None else pl.col("image_id")
    place = pl.coalesce(pl.col("place_id").cast(pl.String), image) if "place_id" in df.columns else image
    key = pl.col("city").fill_null("") + "/" + place
    # byte-identical photos are one photo: one key, so one side of every split, whatever ids and places they were given
    return pl.coalesce(pl.lit("twin/") + pl.col("duplicate_of"), key) if "duplicate_of" in df.columns else key


def place_keys(frame: pl.DataFrame) -> np.ndarray:
    """One key per row naming its place: city and place id, or, where no place id is given, its exact coordinates.

    The views of one location share a key, so a split by key never puts
    one view of a place in training and another in validation or test.
    """
    return frame.select(_place_key(frame)).to_series().to_numpy()


def _assign_by_group(keys: pl.Series, fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    uniq = np.array(sorted(set(keys.to_list())))
    rng = np.random.default_rng(seed)
    order = uniq[rng.permutation(len(uniq))]
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    labels = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(order) - n_train - n_val)
    return dict(zip(order.tolist(), labels, strict=True))


def make_splits(
    manifest: pl.DataFrame,
    *,
    test_fraction: float = 0.3,
    val_fraction: float = 0.1,
    unseen_cities: Sequence[str] | None = None,
    n_unseen: int = 5,
    seed: int = 0,
) -> pl.DataFrame:
    """Build the split table for both protocols.

    Args:
        manifest: Rows with image_id, city, place_id.
        test_fraction: Share of each city's places held out (seen protocol).
        val_fraction: Share of places used for validation (both protocols).
        unseen_cities: Cities held out whole; if None, ``n_unseen`` drawn by seed.
        n_unseen: How many cities to hold out when none are named.
        seed: Seed for every draw.

    Raises:
        ValueError: On fractions outside [0, 1), unknown held-out cities, or
            holding out every city.
    """
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError("need 0 < test_fraction, 0 <= val_fraction and test_fraction + val_fraction < 1")
    df = manifest.with_columns(_key=_place_key(manifest)).select("image_id", "city", "place_id", "_key")
    train_frac = 1 - test_fraction - val_fraction
    seen_map: dict[str, str] = {}
    for i, city in enumerate(sorted(df["city"].unique().to_list())):
        keys = df.filter(pl.col("city") == city)["_key"]
        seen_map.update(_assign_by_group(keys, (train_frac, val_fraction, test_fraction), seed + i))
    cities = sorted(df["city"].unique().to_list())
    if unseen_cities is None:
        rng = np.random.default_rng(seed)
        held = sorted(rng.choice(cities, size=min(n_unseen, len(cities) - 1), replace=False).tolist())
    else:
        held = sorted(unseen_cities)
        unknown = set(held) - set(cities)
        if unknown:
            raise ValueError(f"held-out cities {sorted(unknown)} are not in the data; cities are {cities}")
    if set(held) >= set(cities):
        raise ValueError("the unseen protocol needs at least one training city")
    rest = df.filter(~pl.col("city").is_in(held))
    v = val_fraction / (1 - test_fraction) if val_fraction else 0.0
    unseen_map = _assign_by_group(rest["_key"], (1 - v, v, 0.0), seed + 1000)
    return df.select(
        "image_id",
        seen=pl.col("_key").replace_strict(seen_map, return_dtype=pl.String),
        unseen=pl.when(pl.col("city").is_in(held))
        .then(pl.lit("test"))
        .otherwise(pl.col("_key").replace_strict(unseen_map, default="train", return_dtype=pl.String)),
    )


def split_counts(splits: pl.DataFrame) -> dict[str, int]:
    """``{protocol}_{split}`` → number of images."""
    out: dict[str, int] = {}
    for proto in ("seen", "unseen"):
        for s in SPLITS:
            out[f"{proto}_{s}"] = int((splits[proto] == s).sum())
    return out
