"""Country and continent of any point on Earth."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from worldnet.geo.land import land_mesh

#: The continents a point can get (Natural Earth's, without 'Seven seas').
CONTINENTS: tuple[str, ...] = (
    "Africa",
    "Antarctica",
    "Asia",
    "Europe",
    "North America",
    "Oceania",
    "South America",
)


#: Countries and territories (ISO 3166-1 alpha-2) that drive on the left.
LEFT_HAND_TRAFFIC = frozenset(
    {
        # Europe
        "GB",
        "IE",
        "MT",
        "CY",
        "IM",
        "JE",
        "GG",
        # Asia
        "JP",
        "IN",
        "PK",
        "BD",
        "LK",
        "NP",
        "BT",
        "TH",
        "MY",
        "SG",
        "ID",
        "BN",
        "TL",
        "HK",
        "MO",
        # Oceania
        "AU",
        "NZ",
        "PG",
        "FJ",
        "SB",
        "TO",
        "WS",
        "KI",
        "TV",
        "NR",
        "CK",
        "NU",
        # Africa
        "ZA",
        "NA",
        "BW",
        "ZW",
        "ZM",
        "MW",
        "MZ",
        "TZ",
        "KE",
        "UG",
        "LS",
        "SZ",
        "MU",
        "SC",
        # the Americas
        "JM",
        "BS",
        "BB",
        "TT",
        "GY",
        "SR",
        "AG",
        "DM",
        "GD",
        "KN",
        "LC",
        "VC",
        "VG",
        "VI",
        "KY",
        "BM",
        "AI",
        "MS",
        "TC",
        "FK",
    }
)


def one_driving_side(lat: ArrayLike, lon: ArrayLike) -> bool:
    """Whether every point lies in a country that drives on the same side of the road.

    Then a street's mirror image is a street of the same region, and a
    model may average a photo with its mirror (:class:`worldnet.features.names.View`);
    where both sides occur, the side of the road is itself a clue to where a
    photo was taken, and a mirror would erase it.
    """
    countries = np.unique(country_of(lat, lon))
    return len({str(c) in LEFT_HAND_TRAFFIC for c in countries}) <= 1


def continent_of(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.str_]:
    """Continent of each point; points at sea take the nearest country's."""
    mesh = land_mesh()
    return mesh.countries.continent[mesh.locate(lat, lon)]


def country_of(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.str_]:
    """ISO 3166-1 alpha-2 code of each point's country (nearest country at sea)."""
    mesh = land_mesh()
    return mesh.countries.iso_a2[mesh.locate(lat, lon)]
