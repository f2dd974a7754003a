"""ADQL executed on PostgreSQL and DuckDB with the same data: equal results, and equal to numpy/astropy.

The catalog is synthetic (seeded) and straddles RA 0 so that wrap-around is exercised. Every query is
translated once per backend, run on both, and compared with an independent computation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import astropy.units as u
import duckdb
import numpy as np
import psycopg
import pytest
from astropy.coordinates import SkyCoord
from sqlglot import exp

from dms.query.adql import translate
from dms.udfs import install_postgres, register_duckdb
from tests.pg_support import create_database, drop_database

N = 2000
RNG = np.random.default_rng(20261124)
IDS = np.arange(1, N + 1)
RA = (RNG.uniform(-3, 4, N)) % 360  # straddles RA 0
DEC = RNG.uniform(-2, 3, N)
MAG = np.round(RNG.uniform(8, 20, N), 3)
WORDS = ["red star", "blue Star", "starry night", "galaxy", "red-giant", "Star"]
NAMES = [WORDS[i % len(WORDS)] + f" {i}" for i in range(N)]
TAGS = ["#".join(["red", "blue", "x"][: 1 + i % 3]) for i in range(N)]
FLUX = RNG.uniform(0.1, 100, N)  # mJy
UNITS = {"ra": "deg", "dec": "deg", "flux": "mJy"}
POINTS = SkyCoord(RA * u.deg, DEC * u.deg)


def unit_of(column: exp.Column) -> str | None:
    return UNITS.get(column.name.lower())


def _rows() -> list[tuple[Any, ...]]:
    mags = [None if i % 97 == 0 else float(m) for i, m in enumerate(MAG)]
    return [
        (int(i), float(r), float(d), m, n, t, float(f))
        for i, r, d, m, n, t, f in zip(IDS, RA, DEC, mags, NAMES, TAGS, FLUX, strict=True)
    ]


DDL = (
    "CREATE SCHEMA cat",
    "CREATE TABLE cat.obj (id BIGINT, ra DOUBLE PRECISION, dec DOUBLE PRECISION, mag DOUBLE PRECISION, "
    "name VARCHAR, tags VARCHAR, flux DOUBLE PRECISION)",
    "CREATE TABLE cat.regions (rid INTEGER, region DOUBLE PRECISION[])",
)
REGIONS = [(1, [0.5, 1.0, 1.0]), (2, [359.0, 0.0, 1.0, 0.0, 1.0, 2.0, 359.0, 2.0])]


class Backend:
    name: str

    def query(self, adql: str) -> list[tuple[Any, ...]]:
        return self.run(translate(adql, self.name, unit_of=unit_of))

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError


class Postgres(Backend):
    name = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        install_postgres(conn)
        for statement in DDL:
            conn.execute(statement)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO cat.obj VALUES (%s, %s, %s, %s, %s, %s, %s)", _rows())
            cur.executemany("INSERT INTO cat.regions VALUES (%s, %s)", REGIONS)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql).fetchall()  # type: ignore[arg-type]


class DuckDB(Backend):
    name = "duckdb"

    def __init__(self) -> None:
        self.conn = duckdb.connect()
        register_duckdb(self.conn)
        for statement in DDL:
            self.conn.execute(statement)
        self.conn.executemany("INSERT INTO cat.obj VALUES (?, ?, ?, ?, ?, ?, ?)", _rows())
        self.conn.executemany("INSERT INTO cat.regions VALUES (?, ?)", REGIONS)

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def backends(pg_server: Any) -> Iterator[tuple[Backend, Backend]]:

    name = create_database(pg_server, "t")
    try:
        with psycopg.connect(pg_server.get_uri(name), autocommit=True) as conn:
            yield Postgres(conn), DuckDB()
    finally:
        drop_database(pg_server, name)


def both(backends: tuple[Backend, Backend], adql: str) -> list[tuple[Any, ...]]:
    """Run on both backends; the (sorted) results must agree, floats to 1e-12 relative."""
    pg, dd = (sorted(b.query(adql), key=repr) for b in backends)
    assert len(pg) == len(dd)
    for a, b in zip(pg, dd, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            if isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-12, abs=1e-12)
            elif isinstance(x, list | tuple):
                assert list(x) == pytest.approx(list(y), rel=1e-12, abs=1e-12)
            else:
                assert x == y
    return pg


def ids(rows: list[tuple[Any, ...]]) -> set[int]:
    return {int(r[0]) for r in rows}


def unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def in_convex_polygon(vertices: list[tuple[float, float]]) -> set[int]:
    """Independent test: inside iff on the inner side of every great-circle edge (counter-clockwise)."""
    v = unit_vectors(np.array([p[0] for p in vertices]), np.array([p[1] for p in vertices]))
    p = unit_vectors(RA, DEC)
    normals = np.cross(v, np.roll(v, -1, axis=0))
    if np.dot(v.sum(axis=0), normals[0]) < 0:
        normals = -normals
    inside = np.all(p @ normals.T >= 0, axis=1)
    return set(IDS[inside].tolist())


def test_cone_search(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT id FROM cat.obj WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 0.5, 1, 1.2)) = 1",
    )
    separation = POINTS.separation(SkyCoord(0.5 * u.deg, 1 * u.deg)).deg
    assert ids(rows) == set(IDS[separation <= 1.2].tolist())
    assert 100 < len(rows) < N


def test_cone_search_adql21_forms_and_region(backends: tuple[Backend, Backend]) -> None:
    a = both(
        backends,
        "SELECT id FROM cat.obj WHERE 1 = CONTAINS(POINT(ra, dec), CIRCLE(POINT(359.5, 0), 0.7))",
    )
    b = both(
        backends,
        "SELECT id FROM cat.obj WHERE INTERSECTS(REGION('CIRCLE ICRS 359.5 0 0.7'), POINT(ra, dec)) = 1",
    )
    separation = POINTS.separation(SkyCoord(359.5 * u.deg, 0 * u.deg)).deg
    assert ids(a) == ids(b) == set(IDS[separation <= 0.7].tolist())


def test_box_is_the_polygon_of_its_corners(backends: tuple[Backend, Backend]) -> None:
    rows = both(backends, "SELECT id FROM cat.obj WHERE CONTAINS(POINT(ra, dec), BOX(0, 1, 3, 2)) = 1")
    expected = in_convex_polygon([(-1.5, 0), (1.5, 0), (1.5, 2), (-1.5, 2)])
    assert ids(rows) == expected and len(expected) > 100


def test_polygon_either_orientation(backends: tuple[Backend, Backend]) -> None:
    ccw = [(359.0, -1.0), (2.0, -1.5), (1.0, 2.0)]
    coords = ", ".join(f"{lon}, {lat}" for lon, lat in ccw)
    reverse = ", ".join(f"POINT({lon}, {lat})" for lon, lat in reversed(ccw))
    a = both(
        backends, f"SELECT id FROM cat.obj WHERE CONTAINS(POINT(ra, dec), POLYGON('ICRS', {coords})) = 1"
    )
    b = both(backends, f"SELECT id FROM cat.obj WHERE CONTAINS(POINT(ra, dec), POLYGON({reverse})) = 1")
    assert ids(a) == ids(b) == in_convex_polygon(ccw)


def test_contains_on_region_values(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT r.rid, o.id FROM cat.obj AS o, cat.regions AS r WHERE CONTAINS(POINT(o.ra, o.dec), "
        'r."region") = 1',  # REGION is an ADQL reserved word
    )
    circle = {i for rid, i in rows if rid == 1}
    polygon = {i for rid, i in rows if rid == 2}
    separation = POINTS.separation(SkyCoord(0.5 * u.deg, 1 * u.deg)).deg
    assert circle == set(IDS[separation <= 1.0].tolist())
    assert polygon == in_convex_polygon([(359.0, 0.0), (1.0, 0.0), (1.0, 2.0), (359.0, 2.0)])


def test_distance_both_forms(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT id, DISTANCE(POINT(ra, dec), POINT(1, 1)), DISTANCE(ra, dec, 1, 1) FROM cat.obj ORDER BY id",
    )
    expected = POINTS.separation(SkyCoord(1 * u.deg, 1 * u.deg)).deg
    got = np.array([r[1] for r in sorted(rows)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert all(r[1] == r[2] for r in rows)


def girard_area(vertices: list[tuple[float, float]]) -> float:
    """Area in square degrees from the interior angles (Girard's theorem), independent of the UDF."""
    v = unit_vectors(np.array([p[0] for p in vertices]), np.array([p[1] for p in vertices]))
    n = len(v)
    angles = []
    for i in range(n):
        a, b, c = v[i - 1], v[i], v[(i + 1) % n]
        t1 = np.cross(b, a)
        t2 = np.cross(b, c)
        angles.append(math.atan2(np.linalg.norm(np.cross(t1, t2)), np.dot(t1, t2)))
    return float((sum(angles) - (n - 2) * math.pi) * (180 / math.pi) ** 2)


def test_area_centroid_and_coordinates(backends: tuple[Backend, Backend]) -> None:
    square = [(9.0, -1.0), (11.0, -1.0), (11.0, 1.0), (9.0, 1.0)]
    coords = ", ".join(f"{lon}, {lat}" for lon, lat in square)
    [row] = both(
        backends,
        "SELECT AREA(CIRCLE(10, 20, 2)), AREA(POLYGON(0, 0, 90, 0, 0, 90)), "
        f"AREA(POLYGON({coords})), AREA(BOX(10, 0, 2, 2)), AREA(POINT(1, 2)), "
        f"COORD1(CENTROID(POLYGON({coords}))), COORD2(CENTROID(POLYGON({coords}))), "
        "CENTROID(CIRCLE(3, 4, 1)), COORD1(POINT(5, 6)), COORD2(POINT(5, 6)), COORDSYS(POINT(5, 6)) "
        "FROM cat.obj WHERE id = 1",  # ADQL has no SELECT without FROM
    )
    sq_deg = (180 / math.pi) ** 2
    assert row[0] == pytest.approx(2 * math.pi * (1 - math.cos(math.radians(2))) * sq_deg, rel=1e-12)
    assert row[1] == pytest.approx(4 * math.pi / 8 * sq_deg, rel=1e-12)  # an octant
    assert row[2] == pytest.approx(girard_area(square), rel=1e-9)
    assert row[3] == pytest.approx(row[2], rel=1e-12)
    assert row[4] == 0
    assert (row[5], row[6]) == (pytest.approx(10, abs=1e-9), pytest.approx(0, abs=1e-9))  # by symmetry
    assert list(row[7]) == [3, 4]
    assert row[8:] == (5, 6, "ICRS")


def test_intersects_and_contains_of_circles(backends: tuple[Backend, Backend]) -> None:
    [row] = both(
        backends,
        "SELECT INTERSECTS(CIRCLE(0, 0, 1), CIRCLE(1.5, 0, 1)), INTERSECTS(CIRCLE(0, 0, 1), CIRCLE(2.5, 0, "
        "1)), "
        "CONTAINS(CIRCLE(0, 0, 1), CIRCLE(0.5, 0, 2)), CONTAINS(CIRCLE(0, 0, 2), CIRCLE(0.5, 0, 1)) "
        "FROM cat.obj WHERE id = 1",
    )
    assert row == (1, 0, 1, 0)


def test_top_order_offset(backends: tuple[Backend, Backend]) -> None:
    pg, dd = (
        b.query("SELECT TOP 7 id FROM cat.obj WHERE mag IS NOT NULL ORDER BY mag DESC, id OFFSET 5")
        for b in backends
    )
    order = sorted((-m, i) for i, m, k in zip(IDS, MAG, range(N), strict=True) if k % 97 != 0)
    assert [r[0] for r in pg] == [r[0] for r in dd] == [i for _, i in order[5:12]]


def test_math_functions(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT id, LOG(flux), LOG10(flux), EXP(flux / 100), SQRT(flux), POWER(flux, 2), ROUND(flux, 2), "
        "TRUNCATE(flux, 1), MOD(flux, 7), ABS(-flux), CEILING(flux), FLOOR(flux), ATAN2(dec, ra), "
        "DEGREES(RADIANS(ra)), SIN(ra) * SIN(ra) + COS(ra) * COS(ra), PI() FROM cat.obj",
    )
    f = dict(zip(IDS.tolist(), FLUX, strict=True))
    for r in rows[:200]:
        x = f[r[0]]
        assert r[1:6] == pytest.approx(
            (math.log(x), math.log10(x), math.exp(x / 100), math.sqrt(x), x * x), rel=1e-12
        )
        assert r[6] == pytest.approx(round(x, 2), abs=0.0051) and abs(r[6] * 100 - round(r[6] * 100)) < 1e-6
        assert r[7] == pytest.approx(math.trunc(x * 10) / 10, abs=1e-9)
        assert r[8] == pytest.approx(math.fmod(x, 7), abs=1e-9)
        assert r[9:12] == (pytest.approx(x), math.ceil(x), math.floor(x))
        assert r[14] == pytest.approx(1) and r[15] == pytest.approx(math.pi)


def test_string_functions_and_ivo_udfs(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT id, ivo_hasword(name, 'star'), ivo_nocasematch(name, 'star%'), ivo_hashlist_has(tags, "
        "'BLUE'), "
        "LOWER(name), UPPER(name), name || '!' FROM cat.obj WHERE name ILIKE '%STAR%' OR name LIKE "
        "'gal%'",
    )
    names = dict(zip(IDS.tolist(), NAMES, strict=True))
    tags = dict(zip(IDS.tolist(), TAGS, strict=True))
    expected_ids = {i for i, n in names.items() if "star" in n.lower() or n.startswith("gal")}
    assert ids(rows) == expected_ids
    for i, word, match, has, low, up, bang in rows:
        n = names[i]
        assert word == int(re.search(r"(^|[^\w])star($|[^\w])", n, re.IGNORECASE) is not None)
        assert match == int(n.lower().startswith("star"))
        assert has == int("blue" in tags[i].split("#"))
        assert (low, up, bang) == (n.lower(), n.upper(), n + "!")


def test_aggregates_group_by_string_agg(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT tags, COUNT(*), MIN(id), MAX(id), AVG(flux), SUM(id), COUNT(mag) "
        "FROM cat.obj GROUP BY tags HAVING COUNT(*) > 1",
    )
    for tag, count, lo, hi, mean, total, with_mag in rows:
        members = [k for k in range(N) if TAGS[k] == tag]
        member_ids = [int(IDS[k]) for k in members]
        assert (count, lo, hi, int(total)) == (
            len(members),
            min(member_ids),
            max(member_ids),
            sum(member_ids),
        )
        assert mean == pytest.approx(FLUX[members].mean(), rel=1e-12)
        assert with_mag == sum(1 for k in members if k % 97 != 0)
    [(joined,)] = both(backends, "SELECT ivo_string_agg(name, '|') FROM cat.obj WHERE id <= 3")
    assert sorted(joined.split("|")) == sorted(NAMES[:3])


def test_in_unit(backends: tuple[Backend, Backend]) -> None:
    rows = both(backends, "SELECT id, IN_UNIT(ra, 'arcsec'), IN_UNIT(flux, 'Jy') FROM cat.obj WHERE id < 50")
    for i, ra_arcsec, jy in rows:
        assert ra_arcsec == pytest.approx((RA[i - 1] * u.deg).to_value(u.arcsec), rel=1e-12)
        assert jy == pytest.approx((FLUX[i - 1] * u.mJy).to_value(u.Jy), rel=1e-12)


def test_with_set_operations_and_subqueries(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "WITH bright AS (SELECT id FROM cat.obj WHERE mag < 10) "
        "SELECT id FROM bright UNION SELECT id FROM cat.obj WHERE id <= 10 "
        "EXCEPT SELECT id FROM cat.obj WHERE id IN (SELECT id FROM cat.obj WHERE MOD(id, 2) = 0)",
    )
    bright = {int(i) for i, m, k in zip(IDS, MAG, range(N), strict=True) if k % 97 != 0 and m < 10}
    assert ids(rows) == {i for i in bright | set(range(1, 11)) if i % 2 == 1}


def test_cast_coalesce_case(backends: tuple[Backend, Backend]) -> None:
    rows = both(
        backends,
        "SELECT id, CAST(id AS VARCHAR(10)), COALESCE(mag, -1), CASE WHEN mag < 12 THEN 'bright' ELSE "
        "'faint' END, "
        "CAST(FLOOR(ra) AS INTEGER) FROM cat.obj WHERE id < 200",
    )
    for i, text, mag, label, ra_int in rows:
        k = i - 1
        m = None if k % 97 == 0 else MAG[k]
        assert text == str(i) and ra_int == math.floor(RA[k])
        assert mag == (-1 if m is None else pytest.approx(m))
        assert label == ("bright" if m is not None and m < 12 else "faint")


def test_cone_in_galactic_coordinates_is_transformed(backends: tuple[Backend, Backend]) -> None:
    """CIRCLE('GALACTIC', l, b, r) finds the rows within r of (l, b) on the sky (issue 17)."""
    centre = SkyCoord(0.5 * u.deg, 1 * u.deg).galactic
    l_deg, b_deg = float(centre.l.deg), float(centre.b.deg)
    rows = both(
        backends,
        f"SELECT id FROM cat.obj WHERE CONTAINS(POINT(ra, dec), CIRCLE('GALACTIC', {l_deg!r}, "
        f"{b_deg!r}, 1.2)) = 1",
    )
    separation = POINTS.galactic.separation(SkyCoord(l_deg * u.deg, b_deg * u.deg, frame="galactic")).deg
    assert ids(rows) == set(IDS[separation <= 1.2].tolist())
    assert len(rows) > 100


def test_box_in_fk4_is_the_fk4_box_on_the_sky(backends: tuple[Backend, Backend]) -> None:
    """BOX('FK4', ...) is the box of the FK4 (B1950) frame: each row is tested in FK4 independently."""
    centre = SkyCoord(0.5 * u.deg, 1 * u.deg).transform_to("fk4")
    lon, lat = float(centre.ra.deg), float(centre.dec.deg)
    rows = both(
        backends,
        f"SELECT id FROM cat.obj WHERE CONTAINS(POINT(ra, dec), BOX('FK4', {lon!r}, {lat!r}, 2, 2)) = 1",
    )
    corners = [(lon - 1, lat - 1), (lon + 1, lat - 1), (lon + 1, lat + 1), (lon - 1, lat + 1)]
    v = unit_vectors(np.array([c[0] for c in corners]), np.array([c[1] for c in corners]))
    in_fk4 = POINTS.transform_to("fk4")
    p = unit_vectors(in_fk4.ra.deg, in_fk4.dec.deg)
    normals = np.cross(v, np.roll(v, -1, axis=0))
    inside = np.all(p @ normals.T >= 0, axis=1)
    assert ids(rows) == set(IDS[inside].tolist())
    assert len(rows) > 100


def test_rand_with_a_seed_is_the_same_on_both_backends(backends: tuple[Backend, Backend]) -> None:
    import random

    rows = both(backends, "SELECT id, RAND(7) FROM cat.obj WHERE id <= 3")
    assert {r[1] for r in rows} == {random.Random(7).random()}
    for backend in backends:  # RAND() is a value per row, in [0, 1)
        values = [r[1] for r in backend.query("SELECT id, RAND() FROM cat.obj WHERE id <= 50")]
        assert all(0 <= v < 1 for v in values) and len(set(values)) > 1


def test_polygon_centroid_is_exact_on_the_sphere(backends: tuple[Backend, Backend]) -> None:
    """CENTROID of a large irregular polygon against healpy: the mean direction of the HEALPix pixels
    inside it (the fan-triangle approximation it replaces was 0.8 degrees off here)."""
    import healpy as hp

    quad = [(10.0, -30.0), (70.0, -25.0), (55.0, 20.0), (20.0, 35.0)]
    coords = ", ".join(f"{lon}, {lat}" for lon, lat in quad)
    reverse = ", ".join(f"{lon}, {lat}" for lon, lat in reversed(quad))
    [row] = both(
        backends,
        f"SELECT CENTROID(POLYGON({coords})), CENTROID(POLYGON({reverse})) FROM cat.obj WHERE id = 1",
    )
    nside = 1024
    vertices = hp.ang2vec(np.array([p[0] for p in quad]), np.array([p[1] for p in quad]), lonlat=True)
    pixels = hp.query_polygon(nside, vertices, inclusive=False)
    mean = np.array(hp.pix2vec(nside, pixels)).sum(axis=1)
    lon, lat = hp.vec2ang(mean / np.linalg.norm(mean), lonlat=True)
    expected = SkyCoord(float(lon[0]) * u.deg, float(lat[0]) * u.deg)
    for centroid in row:
        assert SkyCoord(centroid[0] * u.deg, centroid[1] * u.deg).separation(expected).deg < 0.005
