"""Reduce the Eurocentric skew of GSV-Cities (the paper's de-biasing step).

Strategies, all deterministic by seed:

* ``none``: keep everything;
* ``cap_per_city``: at most ``cap`` images per city;
* ``balance_continents``: no continent may hold more than ``max_share`` of the
  result. Over-represented continents are subsampled (evenly across their
  cities, by water-filling) until their share is exactly ``max_share``.

Sampling keeps whole places together where it can (places are shuffled, then
taken whole), so a de-biased set still has several photos per place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

STRATEGIES = ("none", "cap_per_city", "balance_continents")


@dataclass(frozen=True)
class DebiasSummary:
    """Counts before and after, per continent and per city."""

    strategy: str
    before_continent: dict[str, int]
    after_continent: dict[str, int]
    before_city: dict[str, int]
    after_city: dict[str, int]

    def table(self) -> str:
        """A plain-text before/after table for logs and the CLI."""
        lines = [f"de-bias: {self.strategy}", f"{'continent':<16}{'before':>8}{'after':>8}"]
        for k in sorted(self.before_continent):
            lines.append(f"{k:<16}{self.before_continent[k]:>8}{self.after_continent.get(k, 0):>8}")
        lines.append(f"{'city':<16}{'before':>8}{'after':>8}")
        for k in sorted(self.before_city):
            lines.append(f"{k:<16}{self.before_city[k]:>8}{self.after_city.get(k, 0):>8}")
        return "\n".join(lines)


def _counts(df: pl.DataFrame, col: str) -> dict[str, int]:
    c = df.group_by(col).len().sort(col)
    return dict(zip(c[col].to_list(), (int(v) for v in c["len"].to_list()), strict=True))


def _water_fill(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over groups as evenly as possible without exceeding any group's size."""
    alloc = np.zeros_like(sizes)
    remaining = budget
    order = np.argsort(sizes, kind="stable")
    for rank, i in enumerate(order):
        share = remaining // (len(order) - rank)
        alloc[i] = min(sizes[i], share)
        remaining -= alloc[i]
    # leftover from integer division goes to the groups that still have room
    for i in order[::-1]:
        if remaining <= 0:
            break
        extra = min(sizes[i] - alloc[i], remaining)
        alloc[i] += extra
        remaining -= extra
    return alloc


def _take_per_city(df: pl.DataFrame, quota: dict[str, int], seed: int) -> pl.DataFrame:
    """Keep ``quota[city]`` rows of each city, whole places first, in a seeded order."""
    place = pl.coalesce(pl.col("place_id").cast(pl.String), pl.col("image_id"))
    keyed = df.with_columns(_place=place)
    places = keyed.select("city", "_place").unique().sort("city", "_place")
    rng = np.random.default_rng(seed)
    places = places.with_columns(_order=pl.Series(rng.permutation(places.height)))
    keyed = keyed.join(places, on=["city", "_place"]).sort("city", "_order", "image_id")
    keyed = keyed.with_columns(_rank=pl.int_range(pl.len()).over("city"))
    q = pl.DataFrame({"city": list(quota), "_quota": list(quota.values())}, schema={"city": pl.String, "_quota": pl.Int64})
    out = keyed.join(q, on="city", how="left").filter(pl.col("_rank") < pl.col("_quota").fill_null(0))
    return out.drop("_place", "_order", "_rank", "_quota").sort("image_id")


def debias(
    manifest: pl.DataFrame,
    strategy: str = "balance_continents",
    *,
    cap: int = 100,
    max_share: float = 0.45,
    seed: int = 0,
) -> tuple[pl.DataFrame, DebiasSummary]:
    """Subsample ``manifest`` by ``strategy``; returns the kept rows and a summary.

    Raises:
        ValueError: For an unknown strategy or out-of-range parameters.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown de-bias strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    city_n = _counts(manifest, "city")
    if strategy == "none" or manifest.height == 0:
        out = manifest
    elif strategy == "cap_per_city":
        if cap < 1:
            raise ValueError("cap must be at least 1")
        out = _take_per_city(manifest, {c: min(n, cap) for c, n in city_n.items()}, seed)
    else:
        if not 0 < max_share <= 1:
            raise ValueError("max_share must be in (0, 1]")
        out = _take_per_city(manifest, _continent_quota(manifest, max_share), seed)
    summary = DebiasSummary(
        strategy=strategy,
        before_continent=_counts(manifest, "continent"),
        after_continent=_counts(out, "continent"),
        before_city=city_n,
        after_city=_counts(out, "city"),
    )
    return out, summary


def _continent_quota(manifest: pl.DataFrame, max_share: float) -> dict[str, int]:
    """Per-city quotas so that no continent exceeds ``max_share`` of the total."""
    cont = _counts(manifest, "continent")
    kept = dict(cont)
    # Repeatedly cap the largest continents: with rest R outside the capped set C,
    # each capped continent gets s/(1 - s|C|) * R, solved by iterating.
    for _ in range(len(cont)):
        capped = {k for k, n in kept.items() if n > max_share * sum(kept.values()) + 1e-9}
        if not capped:
            break
        rest = sum(n for k, n in kept.items() if k not in capped)
        denom = 1 - max_share * len(capped)
        level = int(max_share * rest / denom) if denom > 0 else min(kept.values())
        for k in capped:
            kept[k] = min(cont[k], max(level, 1))
    quota: dict[str, int] = {}
    city_cont = manifest.group_by("city", "continent").len().sort("city")
    for k, budget in kept.items():
        sub = city_cont.filter(pl.col("continent") == k)
        alloc = _water_fill(sub["len"].to_numpy().astype(np.int64), budget)
        quota.update(zip(sub["city"].to_list(), (int(a) for a in alloc), strict=True))
    return quota
