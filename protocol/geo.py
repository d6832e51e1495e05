"""Places on the Earth (issue 18): distances, and coordinates rounded before they are shared.

A lab's coordinates travel as integers of microdegrees (DAG-CBOR in fabnode carries no floats:
protocol/dagcbor.py), already rounded to the precision the lab chose, so the precise spot never
leaves the machine. Rounding snaps to a grid whose cells are ``precision_km`` tall and, along the
parallel, as wide at that latitude (wider in degrees towards the poles), so a rounded point is
within about ``precision_km`` of the true one anywhere.

Pure: no storage, clock or network.
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088
"""The mean Earth radius (IUGG), as the shared contract fixes it."""
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180.0
"""Kilometres per degree of latitude (and of longitude on the equator): about 111.2."""
MICRO = 1_000_000
MIN_PRECISION_KM = 0.1
MAX_PRECISION_KM = 500.0
DEFAULT_PRECISION_KM = 10.0


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def check_coordinates(lat: float, lon: float) -> None:
    """ValueError (one line) unless -90 <= lat <= 90 and -180 <= lon <= 180, finite."""
    if not (isinstance(lat, (int, float)) and math.isfinite(lat) and -90 <= lat <= 90):
        raise ValueError(f"latitude {lat!r} is out of range (-90 to 90 degrees)")
    if not (isinstance(lon, (int, float)) and math.isfinite(lon) and -180 <= lon <= 180):
        raise ValueError(f"longitude {lon!r} is out of range (-180 to 180 degrees)")


def check_precision(precision_km: float) -> None:
    if not (isinstance(precision_km, (int, float)) and math.isfinite(precision_km)
            and MIN_PRECISION_KM <= precision_km <= MAX_PRECISION_KM):
        raise ValueError(f"precision {precision_km!r} km is absurd (between {MIN_PRECISION_KM:g} and "
                         f"{MAX_PRECISION_KM:g} km: a lab's town, not its doorstep nor its continent)")


def rounded_micro(lat: float, lon: float, precision_km: float) -> tuple[int, int]:
    """(lat, lon) in microdegrees, snapped to the ``precision_km`` grid; checks both first."""
    check_coordinates(lat, lon)
    check_precision(precision_km)
    lat_step = precision_km / KM_PER_DEGREE
    rlat = max(-90.0, min(90.0, round(lat / lat_step) * lat_step))
    shrink = max(math.cos(math.radians(rlat)), precision_km / (180 * KM_PER_DEGREE))
    lon_step = min(360.0, lat_step / shrink)
    rlon = round(lon / lon_step) * lon_step
    if rlon > 180:
        rlon -= 360
    elif rlon < -180:
        rlon += 360
    return round(rlat * MICRO), round(rlon * MICRO)


def bounding_box(lat: float, lon: float, radius_km: float) -> tuple[float, float, float, float] | None:
    """(min lat, max lat, min lon, max lon) holding every point within ``radius_km``, or None
    when the box would wrap the antimeridian or a pole (the caller then checks every point)."""
    dlat = radius_km / KM_PER_DEGREE
    lo_lat, hi_lat = lat - dlat, lat + dlat
    if lo_lat <= -90 or hi_lat >= 90:
        return None
    shrink = min(math.cos(math.radians(lo_lat)), math.cos(math.radians(hi_lat)))
    dlon = dlat / shrink
    if dlon >= 180 or lon - dlon < -180 or lon + dlon > 180:
        return None
    return lo_lat, hi_lat, lon - dlon, lon + dlon


__all__ = ["DEFAULT_PRECISION_KM", "EARTH_RADIUS_KM", "bounding_box", "check_coordinates", "check_precision",
           "distance_km", "rounded_micro"]
