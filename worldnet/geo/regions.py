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


def continent_of(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.str_]:
    """Continent of each point; points at sea take the nearest country's."""
    mesh = land_mesh()
    return mesh.countries.continent[mesh.locate(lat, lon)]


def country_of(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.str_]:
    """ISO 3166-1 alpha-2 code of each point's country (nearest country at sea)."""
    mesh = land_mesh()
    return mesh.countries.iso_a2[mesh.locate(lat, lon)]
