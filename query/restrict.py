"""Restrict: find spatial and object-id restrictions in a bound query's WHERE clause.

A spatial restriction on a director table alias becomes a set of `_healpix_29` ranges that covers the region
(healpy computes the coverage, conservatively); the exact per-row test stays in the query. Recognised:
scisql_s2PtInCircle/Box/Ellipse/CPoly(ra, dec, ...) = 1 (which ADQL CONTAINS and the Qserv areaspecs lower
to), scisql_angSep(ra, dec, lon, lat) < r (ADQL DISTANCE), and ra/dec BETWEEN, which Qserv cannot use.
Restrictions combine through AND (intersection) and OR (union when every branch restricts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import healpy
import numpy as np
import numpy.typing as npt
from sqlglot import exp

from dms.schema.catalog import CatalogTable

ORDER_29 = 29
MAX_COVER_ORDER = 16
Ranges = npt.NDArray[np.int64]  # (n, 2) inclusive [lo, hi] at order 29, sorted, disjoint


def constant(node: exp.Expression) -> float | None:
    """The value of a constant numeric expression, else None."""
    if isinstance(node, exp.Paren):
        return constant(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    if isinstance(node, exp.Neg):
        value = constant(node.this)
        return None if value is None else -value
    if isinstance(node, exp.Cast):
        return constant(node.this)
    operations: dict[type, Callable[[float, float], float]] = {
        exp.Add: lambda a, b: a + b,
        exp.Sub: lambda a, b: a - b,
        exp.Mul: lambda a, b: a * b,
        exp.Div: lambda a, b: a / b,
    }
    for kind, operation in operations.items():
        if isinstance(node, kind):
            left, right = constant(node.this), constant(node.expression)
            if left is None or right is None or (kind is exp.Div and right == 0):
                return None
            return operation(left, right)
    return None


def integer(node: exp.Expression) -> int | None:
    """The exact value of an integer literal (ids exceed a double's 53-bit precision), else None."""
    if isinstance(node, exp.Paren):
        return integer(node.this)
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    if isinstance(node, exp.Neg):
        value = integer(node.this)
        return None if value is None else -value
    return None


def merge_ranges(ranges: Ranges) -> Ranges:
    if len(ranges) == 0:
        return ranges.reshape(0, 2)
    ranges = ranges[np.argsort(ranges[:, 0])]
    starts, ends = [int(ranges[0, 0])], [int(ranges[0, 1])]
    for lo, hi in ranges[1:].tolist():
        if lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return np.array([starts, ends], np.int64).T


def intersect_ranges(a: Ranges, b: Ranges) -> Ranges:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i, 0], b[j, 0]), min(a[i, 1], b[j, 1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i, 1] < b[j, 1]:
            i += 1
        else:
            j += 1
    return np.array(out, np.int64).reshape(-1, 2)


def pixels_to_ranges(order: int, pixels: npt.ArrayLike) -> Ranges:
    pix = np.unique(np.asarray(pixels, np.int64))
    shift = 2 * (ORDER_29 - order)
    return merge_ranges(np.stack([pix << shift, ((pix + 1) << shift) - 1], axis=1))


def _cover_order(radius_deg: float) -> int:
    """An order whose pixels are about a quarter of the region's size (a few hundred pixels)."""
    order = 0
    while order < MAX_COVER_ORDER and math.degrees(healpy.nside2resol(1 << (order + 1))) > radius_deg / 4:
        order += 1
    return order


def cone_ranges(lon: float, lat: float, radius: float) -> Ranges:
    if radius >= 180:
        return np.array([[0, 12 * 4**ORDER_29 - 1]], np.int64)
    order = _cover_order(max(radius, 1e-9))
    vec = healpy.ang2vec(lon % 360.0, max(-90.0, min(90.0, lat)), lonlat=True)
    pixels = healpy.query_disc(1 << order, vec, math.radians(max(radius, 0.0)), inclusive=True, nest=True)
    return pixels_to_ranges(order, pixels)


def box_ranges(lon_min: float, lat_min: float, lon_max: float, lat_max: float) -> Ranges:
    """Cover of a longitude/latitude box (longitudes may wrap through 0)."""
    lat_min, lat_max = max(-90.0, lat_min), min(90.0, lat_max)
    if lat_min > lat_max:
        return np.zeros((0, 2), np.int64)
    width = (lon_max - lon_min) % 360.0 if lon_max - lon_min < 360 else 360.0
    order = _cover_order(
        max(
            lat_max - lat_min,
            min(width, 180.0)
            * math.cos(math.radians(min(abs(lat_min), abs(lat_max)) if lat_min * lat_max > 0 else 0.0)),
            1e-6,
        )
    )
    nside = 1 << order
    pixels = healpy.query_strip(
        nside, math.radians(90 - lat_max), math.radians(90 - lat_min), inclusive=True, nest=True
    )
    if width < 360.0 and len(pixels):
        lon, _ = healpy.pix2ang(nside, pixels, nest=True, lonlat=True)
        pad_deg = 2.0 * math.degrees(healpy.max_pixrad(nside))
        max_abs = min(89.999, max(abs(lat_min), abs(lat_max)) + pad_deg)
        pad_lon = pad_deg / math.cos(math.radians(max_abs))
        if pad_lon < 180:
            offset = (lon - lon_min + pad_lon) % 360.0
            pixels = pixels[offset <= width + 2 * pad_lon]
    return pixels_to_ranges(order, pixels)


def polygon_ranges(vertices: list[tuple[float, float]]) -> Ranges | None:
    vectors = np.array([healpy.ang2vec(lon % 360.0, lat, lonlat=True) for lon, lat in vertices])
    center = vectors.sum(axis=0)
    norm = np.linalg.norm(center)
    if norm == 0:
        return None
    radius = max(
        math.degrees(math.acos(float(np.clip(float(v @ center) / norm, -1.0, 1.0)))) for v in vectors
    )
    order = _cover_order(radius)
    try:
        pixels = healpy.query_polygon(1 << order, vectors, inclusive=True, nest=True)
    except (ValueError, RuntimeError):  # not convex: cover the enclosing cone instead
        lon, lat = healpy.vec2ang(center / norm, lonlat=True)
        return cone_ranges(float(lon[0]), float(lat[0]), radius)
    return pixels_to_ranges(order, pixels)


@dataclass(frozen=True)
class Restriction:
    """For one alias: order-29 ranges (None = whole sky) and object ids (None = any)."""

    ranges: Ranges | None = None
    ids: frozenset[int] | None = None


class RestrictionFinder:
    """Spatial and id restrictions of one director/child alias in a WHERE clause."""

    def __init__(self, alias: str, table: CatalogTable) -> None:
        self.alias = alias
        self.table = table

    def find(self, where: exp.Expression | None) -> Restriction:
        if where is None:
            return Restriction()
        return Restriction(
            self._ranges(where.this if isinstance(where, exp.Where) else where),
            self._ids(where.this if isinstance(where, exp.Where) else where),
        )

    def _is_column(self, node: exp.Expression, name: str | None) -> bool:
        return (
            isinstance(node, exp.Column)
            and name is not None
            and node.table == self.alias
            and node.name.lower() == name.lower()
        )

    def _position(self, ra: exp.Expression, dec: exp.Expression) -> bool:
        return (
            self.table.role == "director"
            and self._is_column(ra, self.table.ra_column)
            and self._is_column(dec, self.table.dec_column)
        )

    def _ranges(self, node: exp.Expression) -> Ranges | None:
        if isinstance(node, exp.Paren):
            return self._ranges(node.this)
        if isinstance(node, exp.And):
            left, right = self._ranges(node.this), self._ranges(node.expression)
            if left is None or right is None:
                return left if right is None else right
            return intersect_ranges(left, right)
        if isinstance(node, exp.Or):
            left, right = self._ranges(node.this), self._ranges(node.expression)
            if left is None or right is None:
                return None
            return merge_ranges(np.concatenate([left, right]))
        if isinstance(node, exp.Between) and self.table.role == "director":
            low, high = constant(node.args["low"]), constant(node.args["high"])
            if low is not None and high is not None:
                if self._is_column(node.this, self.table.dec_column):
                    return box_ranges(0.0, low, 360.0, high)
                if self._is_column(node.this, self.table.ra_column) and high - low < 360:
                    return box_ranges(low, -90.0, high, 90.0)
            return None
        if isinstance(node, exp.EQ):
            call, one = node.this, node.expression
            if constant(call) is not None:
                call, one = one, call
            if constant(one) == 1 and isinstance(call, exp.Anonymous):
                return self._region(call)
            if constant(one) == 1 and isinstance(call, exp.Cast) and isinstance(call.this, exp.Paren):
                # CAST((condition) AS INT) = 1 holds exactly where the condition does: ADQL's CONTAINS of a
                # point in a REGION UNION or INTERSECTION (its members' tests under OR and AND); a NOT
                # member restricts nothing
                return self._ranges(call.this.this)
            return None
        if isinstance(node, exp.LT | exp.LTE | exp.GT | exp.GTE):
            return self._distance(node)
        return None

    def _region(self, call: exp.Anonymous) -> Ranges | None:
        name = call.name.lower()
        args = call.expressions
        if len(args) < 2 or not self._position(args[0], args[1]):
            return None
        values = [constant(a) for a in args[2:]]
        if any(v is None for v in values):
            return None
        v = [float(x) for x in values if x is not None]
        if name == "scisql_s2ptincircle" and len(v) == 3:
            return cone_ranges(v[0], v[1], v[2])
        if name == "scisql_s2ptinbox" and len(v) == 4:
            return box_ranges(v[0], v[1], v[2], v[3])
        if name == "scisql_s2ptinellipse" and len(v) == 5:
            return cone_ranges(v[0], v[1], max(v[2], v[3]) / 3600.0)
        if name == "scisql_s2ptincpoly" and len(v) >= 6 and len(v) % 2 == 0:
            return polygon_ranges(list(zip(v[0::2], v[1::2], strict=True)))
        return None

    def _distance(self, node: exp.Expression) -> Ranges | None:
        left, right = node.this, node.expression
        if isinstance(node, exp.GT | exp.GTE):
            left, right = right, left
        radius = constant(right)
        if radius is None or not isinstance(left, exp.Anonymous) or left.name.lower() != "scisql_angsep":
            return None
        args = left.expressions
        if len(args) != 4:
            return None
        for position, center in ((args[:2], args[2:]), (args[2:], args[:2])):
            lon, lat = constant(center[0]), constant(center[1])
            if self._position(*position) and lon is not None and lat is not None:
                return cone_ranges(lon, lat, radius)
        return None

    def _ids(self, node: exp.Expression) -> frozenset[int] | None:
        key = self.table.id_column if self.table.role == "director" else self.table.director_key_column
        if isinstance(node, exp.Paren):
            return self._ids(node.this)
        if isinstance(node, exp.And):
            left, right = self._ids(node.this), self._ids(node.expression)
            if left is None or right is None:
                return left if right is None else right
            return left & right
        if isinstance(node, exp.Or):
            left, right = self._ids(node.this), self._ids(node.expression)
            return None if left is None or right is None else left | right
        if isinstance(node, exp.EQ):
            for column, value in ((node.this, node.expression), (node.expression, node.this)):
                number = integer(value)
                if self._is_column(column, key) and number is not None:
                    return frozenset([number])
        if isinstance(node, exp.In) and self._is_column(node.this, key) and not node.args.get("query"):
            numbers = [integer(v) for v in node.expressions]
            if numbers and all(n is not None for n in numbers):
                return frozenset(n for n in numbers if n is not None)
        return None
