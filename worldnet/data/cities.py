"""The cities of GSV-Cities, plus extra real cities for unseen-city experiments."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    """A city's GSV-Cities name and a real centre coordinate (degrees)."""

    name: str
    lat: float
    lon: float


#: The 23 GSV-Cities cities under their dataset names (OSL = Oslo, PRG = Prague,
#: PRS = Paris, TRT = Toronto), with real centre coordinates.
GSV_CITIES: tuple[City, ...] = (
    City("Bangkok", 13.7563, 100.5018),
    City("Barcelona", 41.3874, 2.1686),
    City("Boston", 42.3601, -71.0589),
    City("Brussels", 50.8503, 4.3517),
    City("BuenosAires", -34.6037, -58.3816),
    City("Chicago", 41.8781, -87.6298),
    City("Lisbon", 38.7223, -9.1393),
    City("London", 51.5072, -0.1276),
    City("LosAngeles", 34.0522, -118.2437),
    City("Madrid", 40.4168, -3.7038),
    City("Medellin", 6.2442, -75.5812),
    City("Melbourne", -37.8136, 144.9631),
    City("MexicoCity", 19.4326, -99.1332),
    City("Miami", 25.7743, -80.2200),
    City("Minneapolis", 44.9778, -93.2650),
    City("OSL", 59.9139, 10.7522),
    City("Osaka", 34.6937, 135.5023),
    City("PRG", 50.0755, 14.4378),
    City("PRS", 48.8566, 2.3522),
    City("Phoenix", 33.4484, -112.0740),
    City("Rome", 41.9028, 12.4964),
    City("TRT", 43.6532, -79.3832),
    City("WashingtonDC", 38.9072, -77.0369),
)

#: Real cities outside GSV-Cities, to test interpolation to places never seen.
EXTRA_CITIES: tuple[City, ...] = (
    City("Sydney", -33.8688, 151.2093),
    City("Tokyo", 35.6762, 139.6503),
    City("CapeTown", -33.9249, 18.4241),
    City("SaoPaulo", -23.5505, -46.6333),
    City("Montreal", 45.5019, -73.5674),
    City("Berlin", 52.5200, 13.4050),
    City("Seattle", 47.6062, -122.3321),
    City("Singapore", 1.3521, 103.8198),
    City("Nairobi", -1.2921, 36.8219),
    City("Lima", -12.0464, -77.0428),
)

ALL_CITIES: dict[str, City] = {c.name: c for c in GSV_CITIES + EXTRA_CITIES}

#: Common names of the cities GSV-Cities abbreviates.
DATASET_NAMES: dict[str, str] = {"Oslo": "OSL", "Prague": "PRG", "Paris": "PRS", "Toronto": "TRT"}


def resolve_cities(names: list[str] | None, *, extra: bool = False) -> list[City]:
    """Cities by name (the 23 GSV-Cities by default), optionally plus the extras.

    Raises:
        ValueError: For a name that is not a known city, listing the known ones.
    """
    if not names:
        chosen = list(GSV_CITIES) + (list(EXTRA_CITIES) if extra else [])
        return chosen
    unknown = [n for n in names if n not in ALL_CITIES]
    if unknown:
        by_lower = {**{k.lower(): k for k in ALL_CITIES}, **{k.lower(): v for k, v in DATASET_NAMES.items()}}
        meant = [f"{n} is {by_lower[n.lower()]}" for n in unknown if n.lower() in by_lower]
        hint = f" ({'; '.join(meant)} here)" if meant else ""
        raise ValueError(f"unknown cities {unknown}{hint}; known cities are: {', '.join(sorted(ALL_CITIES))}")
    return [ALL_CITIES[n] for n in names]
