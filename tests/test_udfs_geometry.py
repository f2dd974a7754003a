"""scisql geometry functions on PostgreSQL and DuckDB, checked against astropy and numpy.

Every region is checked against an independent computation (astropy separations, a numpy
re-implementation of scisql's box rules, the ellipse in the orthographic (SIN) projection, the
polygon as a planar polygon in the gnomonic projection), skipping points within 1e-9 of a boundary,
where either answer is right. Angles whose nonzero magnitude is below 1e-12 degrees (TINY) are left out:
there PostgreSQL reports float underflow (see test_postgres_reports_float_underflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_udfs_backends import UDFBackend, open_duckdb, open_postgres

from tests.hypothesis_profiles import examples

SETTINGS = settings(deadline=None, max_examples=examples(40), suppress_health_check=[HealthCheck.too_slow])
MARGIN = 1e-9


@pytest.fixture(scope="module", params=["postgres", "duckdb"])
def backend(request: pytest.FixtureRequest, pg_server: Any) -> Iterator[UDFBackend]:
    with open_postgres(pg_server) if request.param == "postgres" else open_duckdb() as opened:
        yield opened


# Real coordinates and offsets are exactly 0 or at least ~1e-12 degrees (4 nano-arcseconds) apart.
# Much smaller nonzero values make products underflow, which PostgreSQL reports as an error (see
# test_postgres_reports_float_underflow), so the property tests stay in the realistic domain.
TINY = 1e-12


def _not_tiny(x: float) -> float:
    return 0.0 if abs(x) < TINY else x


def _not_tiny_array(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < TINY, 0.0, x)


lon = st.floats(-720, 720, allow_nan=False).map(_not_tiny)
lat = st.floats(-90, 90, allow_nan=False).map(_not_tiny)
lon_or_edge = st.one_of(lon, st.sampled_from([0.0, 90.0, 180.0, 270.0, 360.0, -180.0, 359.9999999999]))
lat_or_edge = st.one_of(lat, st.sampled_from([0.0, 90.0, -90.0, 89.9999999, -89.9999999]))


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    ra = np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360
    return _not_tiny_array(ra), _not_tiny_array(np.degrees(np.arcsin(np.clip(v[..., 2], -1, 1))))


def _separation(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    return SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg


def _as_int(values: list[Any]) -> np.ndarray:
    assert all(v in (0, 1) for v in values), values
    return np.array(values, dtype=int)


# ---- angSep -------------------------------------------------------------------------------------------


@st.composite
def point_pairs(draw: st.DrawFn) -> tuple[float, float, float, float]:
    """Random pairs, plus pairs a hair apart and pairs a hair off antipodal, where formulas lose digits."""
    ra1, dec1 = draw(lon_or_edge), draw(lat_or_edge)
    kind = draw(st.sampled_from(["random", "close", "antipodal"]))
    if kind == "random":
        return ra1, dec1, draw(lon_or_edge), draw(lat_or_edge)
    d_ra, d_dec = (draw(st.floats(-1e-6, 1e-6).map(_not_tiny)) for _ in range(2))
    if kind == "close":
        return ra1, dec1, ra1 + d_ra, float(np.clip(dec1 + d_dec, -90, 90))
    return ra1, dec1, ra1 + 180 + d_ra, float(np.clip(-dec1 + d_dec, -90, 90))


@SETTINGS
@given(pairs=st.lists(point_pairs(), min_size=1, max_size=50))
def test_angsep_matches_astropy(backend: UDFBackend, pairs: list[tuple[float, ...]]) -> None:
    ra1, dec1, ra2, dec2 = (np.array(c) for c in zip(*pairs, strict=True))
    got = np.array(
        backend.rows("scisql_angSep(ra1, dec1, ra2, dec2)", ra1=ra1, dec1=dec1, ra2=ra2, dec2=dec2)
    )
    expected = _separation(ra1, dec1, ra2, dec2)
    # Vincenty's formula is accurate to a few ulps of the angle in radians at every separation.
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-12)
    assert np.all((got >= 0) & (got <= 180))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0, 0, 0, 90), 90.0),
        ((0, 0, 180, 0), 180.0),
        ((10, -90, 190, 90), 180.0),
        ((359.5, 0, 0.5, 0), 1.0),
        ((-0.5, 0, 0.5, 0), 1.0),
        ((720.25, 10, 0.25, 10), 0.0),
        ((12.3, 45.6, 12.3, 45.6), 0.0),
    ],
)
def test_angsep_known_values(backend: UDFBackend, args: tuple[float, ...], expected: float) -> None:
    assert backend.value(f"scisql_angSep({', '.join(map(str, args))})") == pytest.approx(expected, abs=1e-12)


def test_angsep_at_a_pole_ignores_longitude(backend: UDFBackend) -> None:
    assert backend.value("scisql_angSep(0, 90, 123, 90)") == pytest.approx(0, abs=1e-12)


# ---- NULL, NaN, +/-Inf and out-of-range latitudes --------------------------------------------------------

VALID_CALLS = {
    "scisql_angSep": [10.0, 20.0, 11.0, 21.0],
    "scisql_s2PtInCircle": [10.0, 20.0, 10.5, 20.0, 1.0],
    "scisql_s2PtInBox": [10.0, 20.0, 5.0, 15.0, 15.0, 25.0],
    "scisql_s2PtInEllipse": [10.0, 20.0, 10.0, 20.001, 10.0, 5.0, 30.0],
    "scisql_s2PtInCPoly": [10.0, 20.0, 5.0, 15.0, 15.0, 15.0, 15.0, 25.0, 5.0, 25.0],
}
LATITUDE_ARGS = {
    "scisql_angSep": [1, 3],
    "scisql_s2PtInCircle": [1, 3],
    "scisql_s2PtInBox": [1, 3, 5],
    "scisql_s2PtInEllipse": [1, 3],
    "scisql_s2PtInCPoly": [1, 3, 5, 7, 9],
}


def _call(function: str, args: list[str]) -> str:
    return f"{function}({', '.join(args)})"


@pytest.mark.parametrize("function", sorted(VALID_CALLS))
def test_valid_call_is_not_null(backend: UDFBackend, function: str) -> None:
    value = backend.value(_call(function, [repr(a) for a in VALID_CALLS[function]]))
    assert value is not None
    if function != "scisql_angSep":
        assert value == 1


@pytest.mark.parametrize("special", ["NULL", "'NaN'", "'Infinity'", "'-Infinity'"])
@pytest.mark.parametrize("function", sorted(VALID_CALLS))
def test_null_nan_or_infinite_argument_gives_null(backend: UDFBackend, function: str, special: str) -> None:
    args = [repr(a) for a in VALID_CALLS[function]]
    for i in range(len(args)):
        value = f"CAST({special} AS DOUBLE PRECISION)"
        assert backend.value(_call(function, [*args[:i], value, *args[i + 1 :]])) is None, (function, i)


@pytest.mark.parametrize("latitude", ["90.0000001", "-90.5", "180"])
@pytest.mark.parametrize("function", sorted(VALID_CALLS))
def test_latitude_out_of_range_gives_null(backend: UDFBackend, function: str, latitude: str) -> None:
    args = [repr(a) for a in VALID_CALLS[function]]
    for i in LATITUDE_ARGS[function]:
        assert backend.value(_call(function, [*args[:i], latitude, *args[i + 1 :]])) is None, (function, i)


def test_postgres_reports_float_underflow(pg_server: Any) -> None:
    """Documented limit: products of nonzero angles' sines that underflow to 0 are an error on
    PostgreSQL (its float8 arithmetic checks underflow), and plain IEEE arithmetic on DuckDB."""
    import psycopg

    with open_postgres(pg_server) as postgres, pytest.raises(psycopg.errors.NumericValueOutOfRange):
        postgres.value("scisql_angSep(0, 1e-200, 0, 1e-200)")
    with open_duckdb() as duck:
        assert duck.value("scisql_angSep(0, 1e-200, 0, 1e-200)") == 0.0


# ---- s2PtInCircle --------------------------------------------------------------------------------------


def _offset(ra: float, dec: float, position_angle: np.ndarray, distance: np.ndarray) -> tuple[Any, Any]:
    """Positions at the given distances (degrees) and position angles (degrees east of north)."""
    moved = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(position_angle * u.deg, distance * u.deg)
    return _not_tiny_array(moved.ra.deg), _not_tiny_array(moved.dec.deg)


@SETTINGS
@given(
    center=st.tuples(lon_or_edge, lat_or_edge),
    radius=st.one_of(st.floats(0, 180), st.floats(0, 1e-3)).map(_not_tiny),
    points=st.lists(st.tuples(lon_or_edge, lat_or_edge), max_size=30),
    rim=st.lists(st.tuples(st.floats(0, 360), st.floats(-1e-6, 1e-6)), max_size=30),
)
def test_circle_matches_astropy(
    backend: UDFBackend,
    center: tuple[float, float],
    radius: float,
    points: list[tuple[float, float]],
    rim: list[tuple[float, float]],
) -> None:
    pa, delta = (np.array(c, dtype=float).reshape(-1) for c in zip(*rim, strict=True)) if rim else ([], [])
    rim_ra, rim_dec = _offset(*center, np.asarray(pa), np.clip(radius + np.asarray(delta), 0, 180))
    ra = np.concatenate([np.array([p[0] for p in points], dtype=float), rim_ra, [center[0]]])
    dec = np.concatenate([np.array([p[1] for p in points], dtype=float), rim_dec, [center[1]]])
    got = _as_int(
        backend.rows(
            f"scisql_s2PtInCircle(ra, dec, {center[0]!r}, {center[1]!r}, {radius!r})", ra=ra, dec=dec
        )
    )
    sep = _separation(ra, dec, center[0], center[1])
    clear = np.abs(sep - radius) > MARGIN
    np.testing.assert_array_equal(got[clear], (sep <= radius)[clear])
    assert got[-1] == 1  # the center itself


@SETTINGS
@given(pairs=st.lists(point_pairs(), min_size=1, max_size=40), radius=st.floats(0, 180))
def test_circle_is_exactly_angsep_within_radius(
    backend: UDFBackend, pairs: list[tuple[float, ...]], radius: float
) -> None:
    ra1, dec1, ra2, dec2 = (np.array(c) for c in zip(*pairs, strict=True))
    same = backend.rows(
        f"scisql_s2PtInCircle(ra1, dec1, ra2, dec2, {radius!r})"
        f" = CAST(scisql_angSep(ra1, dec1, ra2, dec2) <= {radius!r} AS INTEGER)",
        ra1=ra1,
        dec1=dec1,
        ra2=ra2,
        dec2=dec2,
    )
    assert all(same)


@pytest.mark.parametrize("radius", ["-1", "180.0000001", "'NaN'"])
def test_circle_invalid_radius_gives_null(backend: UDFBackend, radius: str) -> None:
    assert backend.value(f"scisql_s2PtInCircle(0, 0, 0, 0, CAST({radius} AS DOUBLE PRECISION))") is None


def test_circle_of_radius_180_holds_everything(backend: UDFBackend) -> None:
    ra = np.array([0.0, 180.0, 359.0, 10.0])
    dec = np.array([-90.0, 90.0, 0.0, -0.5])
    assert backend.rows("scisql_s2PtInCircle(ra, dec, 0, 0, 180)", ra=ra, dec=dec) == [1, 1, 1, 1]


# ---- s2PtInBox -----------------------------------------------------------------------------------------


def _angred(x: float) -> float:
    r = float(np.fmod(x, 360.0))
    if r < 0:
        r += 360.0
        if r == 360.0:
            r = 0.0
    return r


def _box_reference(
    ra: float, dec: float, ra_min: float, dec_min: float, ra_max: float, dec_max: float
) -> Any:
    """scisql's s2PtInBox rules (src/udfs/s2PtInBox.c), re-implemented with C's fmod."""
    if ra_max < ra_min and (ra_max < 0 or ra_min > 360):
        return None
    if dec_min > dec_max or dec < dec_min or dec > dec_max:
        return 0
    if ra_max - ra_min >= 360:
        return 1
    p, lo, hi = _angred(ra), _angred(ra_min), _angred(ra_max)
    return int(lo <= p <= hi) if lo <= hi else int(p >= lo or p <= hi)


def _near_box_edge(ra: float, dec: float, box: tuple[float, float, float, float]) -> bool:
    ra_min, dec_min, ra_max, dec_max = box
    d_ra = min(abs(((_angred(ra) - _angred(e)) + 180) % 360 - 180) for e in (ra_min, ra_max))
    return d_ra <= MARGIN or min(abs(dec - dec_min), abs(dec - dec_max)) <= MARGIN


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    ra_min = draw(st.one_of(st.floats(0, 360), st.floats(-400, 800)).map(_not_tiny))
    width = draw(st.one_of(st.floats(0, 30), st.floats(0, 400)).map(_not_tiny))
    wrap = draw(st.booleans())  # express a box crossing 0 as ra_min > ra_max, both in [0, 360]
    ra_max = (ra_min + width) % 360 if wrap and 0 <= ra_min <= 360 else ra_min + width
    dec_min, dec_max = draw(lat), draw(lat)
    if draw(st.integers(0, 4)):  # mostly non-empty boxes
        dec_min, dec_max = min(dec_min, dec_max), max(dec_min, dec_max)
    return ra_min, dec_min, ra_max, dec_max


@SETTINGS
@given(box=boxes(), points=st.lists(st.tuples(lon_or_edge, lat_or_edge), min_size=1, max_size=40))
def test_box_matches_scisql_rules(
    backend: UDFBackend, box: tuple[float, float, float, float], points: list[tuple[float, float]]
) -> None:
    ra_min, dec_min, ra_max, dec_max = box
    # Half of the points inside the box's dec range and near its ra range, where the answer is not
    # decided by the latitudes alone.
    inside_ish = [
        (ra_min + f * (ra_max - ra_min), dec_min + f * (dec_max - dec_min)) for f in (0.3, 0.5, 0.9)
    ]
    points = [*points, *inside_ish]
    ra, dec = (np.array(c, dtype=float) for c in zip(*points, strict=True))
    got = backend.rows(
        f"scisql_s2PtInBox(ra, dec, {ra_min!r}, {dec_min!r}, {ra_max!r}, {dec_max!r})", ra=ra, dec=dec
    )
    for r, d, g in zip(ra, dec, got, strict=True):
        if not -90 <= d <= 90:
            assert g is None
        elif not _near_box_edge(r, d, box):
            assert g == _box_reference(r, d, ra_min, dec_min, ra_max, dec_max), (r, d)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((359, 0, 350, -1, 10, 1), 1),  # box crossing ra = 0, written ra_min > ra_max
        ((5, 0, 350, -1, 10, 1), 1),
        ((180, 0, 350, -1, 10, 1), 0),
        ((365, 0, 350, -1, 10, 1), 1),  # point ra is range-reduced
        ((5, 0, 350, -1, 370, 1), 1),  # ra_max beyond 360: range-reduced
        ((180, 0, 350, -1, 370, 1), 0),
        ((123, 0, -10, -1, 350, 1), 1),  # ra_max - ra_min >= 360: every longitude
        ((10, 0, 10, 0, 20, 1), 1),  # edges are inclusive
        ((20, 1, 10, 0, 20, 1), 1),
        ((5, 0, 10, 1, 20, -1), 0),  # dec_min > dec_max: empty
        ((5, 0, 10, -1, -20, 1), None),  # ra_max < ra_min with ra_max < 0: invalid
        ((5, 0, 370, -1, 10, 1), None),  # ra_max < ra_min with ra_min > 360: invalid
        ((0, 90, 0, 89, 360, 90), 1),
    ],
)
def test_box_known_values(backend: UDFBackend, args: tuple[float, ...], expected: Any) -> None:
    assert backend.value(f"scisql_s2PtInBox({', '.join(map(str, args))})") == expected


# ---- s2PtInEllipse -------------------------------------------------------------------------------------


def _ellipse_reference(
    ra: np.ndarray, dec: np.ndarray, center: tuple[float, float], major: float, minor: float, pa: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ellipse in the orthographic (SIN) projection at its center, from the projection formulas
    (xi east, eta north); returns (inside, distance of the ellipse equation from 1)."""
    a0, d0, a, d = np.radians(center[0]), np.radians(center[1]), np.radians(ra), np.radians(dec)
    xi = np.cos(d) * np.sin(a - a0)
    eta = np.sin(d) * np.cos(d0) - np.cos(d) * np.sin(d0) * np.cos(a - a0)
    cos_c = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(a - a0)
    t = np.radians(pa)
    along_major = xi * np.sin(t) + eta * np.cos(t)
    along_minor = xi * np.cos(t) - eta * np.sin(t)
    q = (along_major / np.radians(major / 3600)) ** 2 + (along_minor / np.radians(minor / 3600)) ** 2
    return (cos_c > 0) & (q <= 1), np.abs(q - 1)


@SETTINGS
@given(
    center=st.tuples(lon_or_edge, lat),
    major=st.floats(1e-3, 36000),
    axis_ratio=st.floats(0.05, 1),
    pa=st.floats(-360, 360).map(_not_tiny),
    offsets=st.lists(st.tuples(st.floats(0, 360), st.floats(0, 1.5).map(_not_tiny)), min_size=1, max_size=40),
)
def test_ellipse_matches_sin_projection(
    backend: UDFBackend,
    center: tuple[float, float],
    major: float,
    axis_ratio: float,
    pa: float,
    offsets: list[tuple[float, float]],
) -> None:
    minor = major * axis_ratio
    angle, fraction = (np.array(c) for c in zip(*offsets, strict=True))
    ra, dec = _offset(*center, angle, fraction * major / 3600)
    ra, dec = np.append(ra, (center[0] + 180) % 360), np.append(dec, -center[1])  # the antipode
    got = _as_int(
        backend.rows(
            f"scisql_s2PtInEllipse(ra, dec, {center[0]!r}, {center[1]!r}, {major!r}, {minor!r}, {pa!r})",
            ra=ra,
            dec=dec,
        )
    )
    inside, distance = _ellipse_reference(ra, dec, center, major, minor, pa)
    clear = distance > 1e-6
    np.testing.assert_array_equal(got[clear], inside[clear])
    assert got[-1] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0, 0, 0, 0, 10, 5, 0), 1),  # the center
        ((0, 9 / 3600, 0, 0, 10, 5, 0), 1),  # along the major axis (north at position angle 0)
        ((9 / 3600, 0, 0, 0, 10, 5, 0), 0),  # the same distance along the minor axis
        ((9 / 3600, 0, 0, 0, 10, 5, 90), 1),  # ... which is the major axis at position angle 90
        ((180, 0, 0, 0, 36000, 36000, 0), 0),  # the antipode (scisql's projection test says inside)
        ((0, 0, 0, 0, 10, 0, 0), 0),  # zero minor axis: nothing inside
        ((0, 0, 0, 0, 10, 11, 0), None),  # minor > major
        ((0, 0, 0, 0, 36001, 5, 0), None),  # major > 10 degrees
        ((0, 0, 0, 0, 10, -1, 0), None),
    ],
)
def test_ellipse_known_values(backend: UDFBackend, args: tuple[float, ...], expected: Any) -> None:
    assert backend.value(f"scisql_s2PtInEllipse({', '.join(map(repr, args))})") == expected


# ---- s2PtInCPoly ---------------------------------------------------------------------------------------


def _tangent_basis(ra: float, dec: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = _unit(np.array(ra), np.array(dec))
    e = np.cross([0.0, 0.0, 1.0], c)
    e = e / np.linalg.norm(e) if np.linalg.norm(e) > 1e-12 else np.array([0.0, 1.0, 0.0])
    return c, e, np.cross(c, e)


@st.composite
def polygons(draw: st.DrawFn) -> tuple[tuple[float, float], float, np.ndarray]:
    """A convex polygon: vertices on a circle of the gnomonic plane at a center, in increasing angle."""
    center = (draw(lon_or_edge), draw(lat))
    size = draw(st.floats(1e-4, 1.5))  # tangent-plane radius; 1.5 is 56 degrees
    n = draw(st.integers(3, 20))
    gaps = np.array(draw(st.lists(st.floats(0.2, 1), min_size=n, max_size=n)))
    angles = draw(st.floats(0, 2 * np.pi)) + np.cumsum(gaps) / gaps.sum() * 2 * np.pi
    return center, size, angles


@SETTINGS
@given(
    polygon=polygons(),
    clockwise=st.booleans(),
    plane_points=st.lists(st.tuples(st.floats(-2, 2), st.floats(-2, 2)), min_size=1, max_size=40),
)
def test_polygon_matches_gnomonic_plane(
    backend: UDFBackend,
    polygon: tuple[tuple[float, float], float, np.ndarray],
    clockwise: bool,
    plane_points: list[tuple[float, float]],
) -> None:
    center, size, angles = polygon
    c, e, n = _tangent_basis(*center)
    vx, vy = size * np.cos(angles), size * np.sin(angles)  # counter-clockwise in (east, north)
    v_ra, v_dec = _radec(c + vx[:, None] * e + vy[:, None] * n)
    px, py = (np.array(k) * size for k in zip(*plane_points, strict=True))
    ra, dec = _radec(c + px[:, None] * e + py[:, None] * n)
    ra, dec = np.append(ra, (center[0] + 180) % 360), np.append(dec, -center[1])  # the antipode
    order = slice(None, None, -1) if clockwise else slice(None)
    vertices = ", ".join(
        f"{a!r}, {b!r}" for a, b in zip(v_ra[order].tolist(), v_dec[order].tolist(), strict=True)
    )
    got = _as_int(backend.rows(f"scisql_s2PtInCPoly(ra, dec, {vertices})", ra=ra, dec=dec))
    # Reference: a point is inside iff it is left of (or on) every counter-clockwise edge in the plane.
    ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
    cross = ex * (py[:, None] - vy) - ey * (px[:, None] - vx)
    distance = np.abs(cross) / np.hypot(ex, ey)
    inside = np.all(cross >= 0, axis=1)
    clear = np.all(distance > 1e-9 * size, axis=1)
    np.testing.assert_array_equal(got[:-1][clear], inside[clear])
    assert got[-1] == 0


def test_polygon_around_the_pole_and_across_ra_0(backend: UDFBackend) -> None:
    square = "0, 80, 90, 80, 180, 80, 270, 80"
    assert backend.value(f"scisql_s2PtInCPoly(45, 89, {square})") == 1
    assert backend.value(f"scisql_s2PtInCPoly(45, 0, {square})") == 0
    across = "350, -1, 10, -1, 10, 1, 350, 1"
    assert backend.value(f"scisql_s2PtInCPoly(0, 0, {across})") == 1
    assert backend.value(f"scisql_s2PtInCPoly(359, 0.5, {across})") == 1
    assert backend.value(f"scisql_s2PtInCPoly(180, 0, {across})") == 0
    assert backend.value("scisql_s2PtInCPoly(0, 0, 10, 0, 0, 10, -10, 0)") == 1  # a vertex on the point's row


@pytest.mark.parametrize("arguments", ["1, 1, 0, 0, 2, 0", "1, 1, 0, 0, 2, 0, 2", ", ".join(["1"] * 44)])
def test_polygon_with_wrong_number_of_coordinates_is_an_error(backend: UDFBackend, arguments: str) -> None:
    with pytest.raises(backend.error):
        backend.value(f"scisql_s2PtInCPoly({arguments})")


def test_polygon_takes_a_coordinate_array_on_postgres(pg_server: Any) -> None:
    with open_postgres(pg_server) as postgres:
        coordinates = "ARRAY[0, 0, 2, 0, 2, 2, 0, 2]::double precision[]"
        assert postgres.value(f"scisql_s2PtInCPoly(1, 1, VARIADIC {coordinates})") == 1
        assert postgres.value("scisql_s2PtInCPoly(1, 1, VARIADIC NULL::double precision[])") is None


def test_polygon_with_20_vertices(backend: UDFBackend) -> None:
    vertices = ", ".join(f"{18.0 * i!r}, 80.0" for i in range(20))
    assert backend.value(f"scisql_s2PtInCPoly(0, 90, {vertices})") == 1
    assert backend.value(f"scisql_s2PtInCPoly(0, 79.9, {vertices})") == 0
