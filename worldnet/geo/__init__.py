"""Geographic core: distances on the sphere, spherical means, land and continents."""

from worldnet.geo.land import LandMesh, is_land, land_mesh, snap_to_land
from worldnet.geo.regions import CONTINENTS, continent_of, country_of
from worldnet.geo.sphere import (
    EARTH_RADIUS_KM,
    haversine_km,
    haversine_km_torch,
    latlon_to_xyz,
    spherical_mean,
    uniform_sphere,
    xyz_to_latlon,
)

__all__ = [
    "CONTINENTS",
    "EARTH_RADIUS_KM",
    "LandMesh",
    "continent_of",
    "country_of",
    "haversine_km",
    "haversine_km_torch",
    "is_land",
    "land_mesh",
    "latlon_to_xyz",
    "snap_to_land",
    "spherical_mean",
    "uniform_sphere",
    "xyz_to_latlon",
]
