"""Convert Natural Earth's 1:110m land (public domain), as the npm package world-atlas ships it
in TopoJSON (``land-110m.json``), into the SVG path the labs page draws its map with.

Run once; the output is committed (node/http/static/world-land-110m.path), so the page needs no
outside host, no tiles and no npm at run time:

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python tools/world_outline.py package/land-110m.json node/http/static/world-land-110m.path

Projection: equirectangular, x = longitude + 180, y = 90 - latitude, in a 360 x 180 box; points
are rounded to 0.1 degree and consecutive duplicates dropped (the map is drawn a few hundred
pixels wide: a tenth of a degree is under a pixel).
"""

from __future__ import annotations

import json
import sys


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """TopoJSON arcs (quantized, delta-encoded) as lists of (lon, lat)."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(arcs, indexes: list[int]) -> list[tuple[float, float]]:
    """A polygon ring from arc indexes (``~i`` is arc i reversed); shared end points once."""
    points: list[tuple[float, float]] = []
    for i in indexes:
        arc = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        points.extend(arc if not points else arc[1:])
    return points


def unwrapped(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A ring with continuous longitudes (no jump of 360 where it crosses the antimeridian:
    world-atlas stitches Natural Earth's cut polygons back together); a ring around a pole
    (Antarctica) is closed along that pole's edge of the map."""
    out = [points[0]]
    for lon, lat in points[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while prev - lon > 180:
            lon += 360
        out.append((lon, lat))
    if abs(out[-1][0] - out[0][0]) > 180:  # went once around a pole
        pole = -90.0 if sum(lat for _, lat in out) < 0 else 90.0
        out += [(out[-1][0], pole), (out[0][0], pole)]
    return out


def path_data(topology: dict, name: str = "land") -> str:
    """Every ring once, and again shifted by 360 degrees where it runs past the map's edge,
    so that the SVG's viewBox clips it at the antimeridian instead of drawing a line across."""
    arcs = decode_arcs(topology)
    parts = []
    for geometry in topology["objects"][name]["geometries"]:
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        for polygon in polygons:
            for indexes in polygon:
                points = unwrapped(ring(arcs, indexes))
                lons = [lon for lon, _ in points]
                for shift in (-360, 0, 360):
                    if max(lons) + shift < -180 or min(lons) + shift > 180:
                        continue
                    coords = []
                    for lon, lat in points:
                        xy = (round(lon + shift + 180, 1), round(90 - lat, 1))
                        if not coords or coords[-1] != xy:
                            coords.append(xy)
                    if len(coords) >= 3:
                        parts.append("M" + "L".join(f"{x:g},{y:g}" for x, y in coords) + "Z")
    return "".join(parts)


def main(source: str, target: str) -> None:
    with open(source, encoding="utf-8") as f:
        topology = json.load(f)
    with open(target, "w", encoding="utf-8") as f:
        f.write(path_data(topology) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
