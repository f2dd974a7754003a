"""Region columns: an STC-S text column (ObsCore's ``s_region``) stored with a spatial representation.

Beside a region column ``c`` a table holds

* ``c_shape`` (double precision[] / DOUBLE[]): the region as a DALI array, ICRS degrees (``[lon, lat]``,
  ``[lon, lat, radius]`` or the polygon's vertices ``[lon1, lat1, ...]``, a BOX as its four corners), on
  which ``adql_intersects`` (udfs/*/60_regions.sql) decides exactly;
* ``c_moc`` (bigint[] / BIGINT[]): the nested HEALPix cells at order :data:`MOC_ORDER` that cover it,
  widened by one ring of neighbours so that a cell the coverage search missed at the boundary is still in
  it; two regions whose cell lists share no cell cannot meet, so ``c_moc && query_cells`` prunes rows
  before the exact test.

Regions that are not one shape (STC-S UNION, INTERSECTION, NOT) have no ``c_shape``; their rows are found
only by their text (a warning is logged when such a region is written).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from dms.query.adql import stcs

log = logging.getLogger(__name__)

MOC_ORDER = 10
"""HEALPix order of the stored coverage: cells of about 0.057 degrees, some 40 per LSSTCam detector."""

MAX_QUERY_CELLS = 4096
"""A query region covering more cells than this is not pruned by coverage (the exact test alone)."""

SHAPE_SUFFIX = "_shape"
MOC_SUFFIX = "_moc"

_ASTROPY_FRAMES: dict[str, tuple[str, str | None]] = {
    "FK5": ("fk5", "J2000"),
    "J2000": ("fk5", "J2000"),
    "FK4": ("fk4", "B1950"),
    "B1950": ("fk4", "B1950"),
    "GALACTIC": ("galactic", None),
    "GALACTIC_II": ("galactic", None),
    "ECLIPTIC": ("barycentricmeanecliptic", "J2000"),
}


def _to_icrs(frame: str, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """`points` given in STC-S `frame`, in ICRS (unknown frames are taken as ICRS)."""
    if frame not in _ASTROPY_FRAMES:
        return points
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    name, equinox = _ASTROPY_FRAMES[frame]
    lon, lat = np.array(points, dtype=float).T
    extra: dict[str, Any] = {"equinox": equinox} if equinox else {}
    coord = SkyCoord(lon * u.deg, lat * u.deg, frame=name, **extra).icrs
    return list(zip(coord.ra.deg.tolist(), coord.dec.deg.tolist(), strict=True))


def shape_array(region: stcs.Region) -> list[float] | None:
    """The DALI array of a single-shape region in ICRS, or None for UNION, INTERSECTION and NOT."""
    if isinstance(region, stcs.Position):
        return [float(c) for c in _to_icrs(region.frame, [(region.lon, region.lat)])[0]]
    if isinstance(region, stcs.Circle):
        lon, lat = _to_icrs(region.frame, [(region.lon, region.lat)])[0]
        return [lon, lat, region.radius]
    if isinstance(region, stcs.Box):
        return [c for v in _to_icrs(region.frame, list(region.corners())) for c in v]
    if isinstance(region, stcs.Polygon):
        return [c for v in _to_icrs(region.frame, list(region.vertices)) for c in v]
    return None


def coverage(shape: list[float], order: int = MOC_ORDER) -> list[int]:
    """Sorted nested HEALPix cells at `order` covering the DALI-array `shape`, plus their neighbours."""
    import astropy.units as u
    from astropy.coordinates import Angle, Latitude, Longitude
    from cdshealpix import nested

    if len(shape) == 2:
        cells = nested.lonlat_to_healpix(Longitude([shape[0]] * u.deg), Latitude([shape[1]] * u.deg), order)
    elif len(shape) == 3:
        cells = nested.cone_search(
            Longitude(shape[0] * u.deg), Latitude(shape[1] * u.deg), Angle(shape[2] * u.deg), order, flat=True
        )[0]
    else:
        lon, lat = np.array(shape[0::2]), np.array(shape[1::2])
        cells = nested.polygon_search(Longitude(lon * u.deg), Latitude(lat * u.deg), order, flat=True)[0]
        # the vertices' own cells, which a degenerate (very thin) polygon's search may miss
        vertex_cells = nested.lonlat_to_healpix(Longitude(lon * u.deg), Latitude(lat * u.deg), order)
        cells = np.concatenate([cells, vertex_cells])
    cells = np.unique(np.asarray(cells, dtype=np.int64))
    ring = nested.neighbours(cells, order).ravel()
    return sorted({int(c) for c in cells} | {int(c) for c in ring if c >= 0})


def column_values(text: str | None, column: str = "s_region") -> dict[str, Any]:
    """The representation columns of region column `column` holding STC-S `text` (for an INSERT)."""
    values: dict[str, Any] = {column + SHAPE_SUFFIX: None, column + MOC_SUFFIX: None}
    if text is None or not text.strip():
        return values
    shape = shape_array(stcs.parse(text))
    if shape is None:
        log.warning(
            "%s %r is not a single shape: it is found only by its text, not by position", column, text
        )
        return values
    values[column + SHAPE_SUFFIX] = shape
    values[column + MOC_SUFFIX] = coverage(shape)
    return values


def has_representation(column: str, columns: Iterable[str]) -> bool:
    """Whether a table with `columns` holds region column `column`'s representation columns beside it."""
    names = {c.lower() for c in columns}
    return column.lower() + SHAPE_SUFFIX in names and column.lower() + MOC_SUFFIX in names
