"""Reduce the Eurocentric skew of GSV-Cities (the paper's de-biasing step).

Strategies, all deterministic by seed:

* ``none``: keep everything;
* ``cap_per_city``: at most ``cap`` images per city;
* ``balance_continents``: no continent may hold more than ``max_share`` of the
  result. Over-represented continents are subsampled (evenly across their
  cities, by water-filling) until their share is exactly ``max_share``.
  A dataset of one continent (one country, one region) has nothing to
  balance and is kept whole; with n continents no share below 1/n is
  possible, so ``max_share`` is raised to 1/n (the summary says so).

A de-bias must never quietly destroy a dataset: one that would drop more than
``max_drop`` of the photos (half, by default) stops with :class:`DebiasError`,
which names the options that allow it.

Sampling keeps whole places together where it can (places are shuffled, then
taken whole), so a de-biased set still has several photos per place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

STRATEGIES = ("none", "cap_per_city", "balance_continents")


class DebiasError(ValueError):
    """A de-bias that would drop more of the dataset than the user allowed."""


@dataclass(frozen=True)
class DebiasSummary:
    """Counts before and after, per continent and per city, and why the result is what it is."""

    strategy: str
    before_continent: dict[str, int]
    after_continent: dict[str, int]
    before_city: dict[str, int]
    after_city: dict[str, int]
    note: str = ""

    @property
    def kept(self) -> int:
        return sum(self.after_city.values())

    @property
    def dropped(self) -> int:
        return sum(self.before_city.values()) - self.kept

    def line(self) -> str:
        """One line for the console: strategy, kept and dropped, and the note."""
        before = sum(self.before_city.values())
        share = f" ({self.dropped / before:.0%})" if before else ""
        return f"de-bias {self.strategy}: kept {self.kept:,} of {before:,} photos, dropped {self.dropped:,}{share}" + (
            f"; {self.note}" if self.note else ""
        )

    def table(self) -> str:
        """A plain-text kept/dropped table per continent and per city, for logs, MLflow and the CLI."""
        lines = [self.line(), f"{'continent':<16}{'before':>8}{'kept':>8}{'dropped':>9}"]
        for k in sorted(self.before_continent):
            n, kept = self.before_continent[k], self.after_continent.get(k, 0)
            lines.append(f"{k:<16}{n:>8}{kept:>8}{n - kept:>9}")
        lines.append(f"{'city':<16}{'before':>8}{'kept':>8}{'dropped':>9}")
        for k in sorted(self.before_city):
            n, kept = self.before_city[k], self.after_city.get(k, 0)
            lines.append(f"{k:<16}{n:>8}{kept:>8}{n - kept:>9}")
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        """Kept and dropped per continent and city, as flat metric names (for MLflow)."""
        out: dict[str, float] = {"rows_before": float(sum(self.before_city.values())), "rows_after": float(self.kept)}
        for scope, before, after in (
            ("continent", self.before_continent, self.after_continent),
            ("city", self.before_city, self.after_city),
        ):
            for k, n in before.items():
                key = "".join(c if c.isalnum() else "_" for c in k)
                out[f"kept.{scope}.{key}"] = float(after.get(k, 0))
                out[f"dropped.{scope}.{key}"] = float(n - after.get(k, 0))
        return out


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
    max_drop: float = 0.5,
    seed: int = 0,
) -> tuple[pl.DataFrame, DebiasSummary]:
    """Subsample ``manifest`` by ``strategy``; returns the kept rows and a summary.

    Args:
        max_drop: The largest share of photos the de-bias may drop (0-1); 1 allows anything.

    Raises:
        ValueError: For an unknown strategy or out-of-range parameters.
        DebiasError: When the strategy would drop more than ``max_drop`` of the photos.
    """
    check_debias_options(strategy, cap=cap, max_share=max_share, max_drop=max_drop)
    city_n = _counts(manifest, "city")
    continents = _counts(manifest, "continent")
    note = ""
    if strategy == "none" or manifest.height == 0:
        out = manifest
    elif strategy == "cap_per_city":
        out = _take_per_city(manifest, {c: min(n, cap) for c, n in city_n.items()}, seed)
    elif len(continents) == 1:
        out = manifest
        note = f"all photos are in {next(iter(continents))}: one continent, nothing to balance, every photo kept"
    else:
        share = max(max_share, 1 / len(continents))
        if share > max_share:
            note = f"max_share {max_share:g} is impossible with {len(continents)} continents; used {share:.3g}"
        out = _take_per_city(manifest, _continent_quota(manifest, share), seed)
    summary = DebiasSummary(strategy, continents, _counts(out, "continent"), city_n, _counts(out, "city"), note)
    if manifest.height and summary.dropped > max_drop * manifest.height:
        raise DebiasError(
            f"de-bias {strategy} would drop {summary.dropped:,} of {manifest.height:,} photos ({summary.dropped / manifest.height:.0%}), "
            f"more than max_drop={max_drop:g}; choose another strategy (strategy='none', or strategy='cap_per_city' with a "
            f"larger cap=) or allow it with max_drop=1"
        )
    return out, summary


def check_debias_options(strategy: str, *, cap: int = 100, max_share: float = 0.45, max_drop: float = 0.5) -> None:
    """Validate de-bias options before any data is read (the CLI calls this up front).

    Raises:
        ValueError: Naming the option and its allowed range.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is no de-bias strategy; choose one of {', '.join(STRATEGIES)}")
    if cap < 1:
        raise ValueError(f"cap={cap}: keep at least 1 photo per city")
    if not 0 < max_share <= 1:
        raise ValueError(f"max_share={max_share:g}: choose a share in (0, 1]")
    if not 0 <= max_drop <= 1:
        raise ValueError(f"max_drop={max_drop:g}: choose a share in [0, 1]")


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
