"""De-biasing never destroys a dataset: it keeps what it cannot balance, says why, and stops before dropping most of it."""

import numpy as np
import polars as pl
import pytest

from worldnet.data.debias import DebiasError, check_debias_options, debias


def _manifest(per_continent: dict[str, int], cities_each: int = 3, seed: int = 0) -> pl.DataFrame:
    """Rows of ``per_continent`` photos each, spread over ``cities_each`` cities, 3 photos a place."""
    rng = np.random.default_rng(seed)
    rows = []
    for cont, n in per_continent.items():
        for i in range(n):
            city = f"{cont[:3]}{int(rng.integers(cities_each))}"
            rows.append({"image_id": f"{cont[:3]}-{i}", "city": city, "continent": cont, "place_id": i // 3})
    return pl.DataFrame(rows)


def test_one_continent_is_kept_whole_and_the_summary_says_why():
    # the case found on real photos: 1,707 US-West photos were cut to 1 without a word
    m = _manifest({"North America": 300})
    out, summary = debias(m, "balance_continents")
    assert out.height == 300
    assert summary.dropped == 0
    assert "one continent" in summary.note and "North America" in summary.note
    assert "kept 300 of 300" in summary.line()


def test_an_impossible_share_is_raised_to_what_the_continents_allow():
    m = _manifest({"Europe": 100, "Asia": 100})
    out, summary = debias(m, "balance_continents", max_share=0.45, max_drop=1.0)
    assert out.height == 200  # two equal continents already are as balanced as two can be
    assert "impossible with 2 continents" in summary.note


def test_a_debias_that_would_drop_most_photos_stops_and_names_the_option():
    m = _manifest({"Europe": 900, "Asia": 50, "Oceania": 50})
    with pytest.raises(DebiasError, match=r"max_drop=0.5") as err:
        debias(m, "balance_continents", max_share=0.45)
    assert "strategy='none'" in str(err.value)
    out, summary = debias(m, "balance_continents", max_share=0.45, max_drop=1.0)
    assert summary.dropped > 0.5 * m.height
    assert summary.after_continent["Europe"] <= 0.45 * out.height + 1


def test_every_strategy_reports_kept_and_dropped_per_city_and_continent():
    m = _manifest({"Europe": 60, "Asia": 40})
    for strategy, kw in (("none", {}), ("cap_per_city", {"cap": 15}), ("balance_continents", {"max_share": 0.55})):
        out, summary = debias(m, strategy, **kw)
        metrics = summary.metrics()
        assert metrics["rows_before"] == 100 and metrics["rows_after"] == out.height
        for cont in ("Europe", "Asia"):
            assert metrics[f"kept.continent.{cont}"] + metrics[f"dropped.continent.{cont}"] == summary.before_continent[cont]
        assert sum(v for k, v in metrics.items() if k.startswith("dropped.city.")) == summary.dropped
        assert "dropped" in summary.table().splitlines()[1]


@pytest.mark.parametrize(
    ("kw", "option"),
    [
        ({"strategy": "balance"}, "strategy="),
        ({"strategy": "cap_per_city", "cap": 0}, "cap=0"),
        ({"strategy": "none", "max_share": 1.5}, "max_share=1.5"),
        ({"strategy": "none", "max_drop": -0.1}, "max_drop=-0.1"),
    ],
)
def test_bad_options_name_the_option(kw, option):
    strategy = kw.pop("strategy")
    with pytest.raises(ValueError, match=option):
        check_debias_options(strategy, **kw)
