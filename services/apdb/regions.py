"""Sky regions an APDB read takes: a circle or a convex polygon (what a detector's or a visit's field is).

Each region gives two things: the `_healpix_29` ranges that cover it (healpy computes the coverage,
conservatively, so an index range scan finds every candidate row) and the exact test as a SQL expression over
the row's ra/dec, evaluated in the database by the scisql functions (`scisql_s2PtInCircle`,
`scisql_s2PtInCPoly`), so only rows really inside the region leave the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from psycopg import sql

from dms.query.restrict import Ranges, cone_ranges, polygon_ranges
from dms.services.apdb.errors import ApdbInputError

MAX_VERTICES = 20


class Region(Protocol):
    """A region of the sky for an APDB read."""

    def healpix_ranges(self) -> Ranges:
        """Inclusive [lo, hi] ranges of `_healpix_29` that cover the region (a superset)."""
        ...

    def sql_contains(self, ra: sql.Composable, dec: sql.Composable) -> sql.Composable:
        """A SQL boolean: whether the point (ra, dec) lies in the region."""
        ...

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """The same test in numpy (for callers that filter frames themselves)."""
        ...


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)], axis=-1)


@dataclass(frozen=True)
class Circle:
    """A cone: centre (ra, dec) and radius, all in degrees."""

    ra: float
    dec: float
    radius: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ra) and math.isfinite(self.dec) and abs(self.dec) <= 90):
            raise ApdbInputError(f"circle centre ({self.ra}, {self.dec}) is not a sky position")
        if not (0 < self.radius <= 180):
            raise ApdbInputError(f"circle radius {self.radius} deg must be in (0, 180]")

    def healpix_ranges(self) -> Ranges:
        return cone_ranges(self.ra, self.dec, self.radius)

    def sql_contains(self, ra: sql.Composable, dec: sql.Composable) -> sql.Composable:
        return sql.SQL("scisql_s2PtInCircle({}, {}, {}, {}, {}) = 1").format(
            ra, dec, sql.Literal(self.ra), sql.Literal(self.dec), sql.Literal(self.radius)
        )

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        centre = _unit_vectors(np.array([self.ra]), np.array([self.dec]))[0]
        cosine = np.clip(_unit_vectors(np.asarray(ra), np.asarray(dec)) @ centre, -1.0, 1.0)
        return np.degrees(np.arccos(cosine)) <= self.radius


@dataclass(frozen=True)
class ConvexPolygon:
    """A convex spherical polygon: vertices (ra, dec) in degrees, in either winding order."""

    vertices: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not 3 <= len(self.vertices) <= MAX_VERTICES:
            raise ApdbInputError(
                f"a polygon needs 3 to {MAX_VERTICES} vertices (scisql_s2PtInCPoly's limit), "
                f"got {len(self.vertices)}"
            )
        for ra, dec in self.vertices:
            if not (math.isfinite(ra) and math.isfinite(dec) and abs(dec) <= 90):
                raise ApdbInputError(f"polygon vertex ({ra}, {dec}) is not a sky position")

    @classmethod
    def from_vertices(cls, vertices: list[tuple[float, float]] | np.ndarray) -> ConvexPolygon:
        return cls(tuple((float(ra), float(dec)) for ra, dec in vertices))

    def healpix_ranges(self) -> Ranges:
        ranges = polygon_ranges(list(self.vertices))
        if ranges is None:
            raise ApdbInputError(f"polygon {self.vertices} has no interior (its vertices cancel out)")
        return ranges

    def sql_contains(self, ra: sql.Composable, dec: sql.Composable) -> sql.Composable:
        flat = [sql.Literal(float(v)) for vertex in self.vertices for v in vertex]
        return sql.SQL("scisql_s2PtInCPoly({}, {}, {}) = 1").format(ra, dec, sql.SQL(", ").join(flat))

    def contains(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        corners = _unit_vectors(*np.array(self.vertices).T)
        points = _unit_vectors(np.asarray(ra), np.asarray(dec))
        edges = np.cross(corners, np.roll(corners, -1, axis=0))
        sides = points @ edges.T
        return bool_all(sides >= 0) | bool_all(sides <= 0)


def bool_all(values: np.ndarray) -> np.ndarray:
    return np.asarray(values.all(axis=-1))
