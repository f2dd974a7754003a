"""ADQL 2.1 bitwise operators and compound regions through the query engine (issue 17), on real Gaia DR3 rows
(tests/catalog_fixtures.py) held by a DuckDB/Parquet shard (cat.gaia) and a PostgreSQL shard (cat.gaia_pg).

Bitwise results are compared with numpy's on the same source_ids; region results with mocpy's MOCs of the
same shapes (order 14, about 13 arcsec cells), leaving out the stars too close to a boundary to call; and the
chunks a query reads with the chunks that hold the stars it must find.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import astropy.units as u
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import Latitude, Longitude
from mocpy import MOC

from dms.deployment import Deployment
from dms.query.engine import QueryEngine
from dms.query.errors import QuerySyntaxError
from tests.catalog_fixtures import Sample, make_sample, sample_deployment

TABLES = ("gaia", "gaia_pg")
HPX12 = 34359738368  # 2**35: a Gaia source_id divided by it is the star's HEALPix level-12 index


@dataclass
class World:
    deployment: Deployment
    engine: QueryEngine
    sample: Sample


@pytest.fixture(scope="module")
def world(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    sample = make_sample(tmp_path_factory.mktemp("bitwise-sample"))
    deployment = sample_deployment(pg_server, tmp_path_factory.mktemp("bitwise"), sample)
    engine = QueryEngine(deployment)
    try:
        yield World(deployment, engine, sample)
    finally:
        engine.close()
        deployment.stop()


def _adql(world: World, query: str) -> pa.Table:
    return world.engine.execute(query, lang="adql").table


def _gaia(world: World) -> dict[str, np.ndarray]:
    table = world.sample.tables["gaia"]
    return {name: table[name].to_numpy() for name in ("source_id", "ra", "dec")}


# bitwise operators and hexadecimal literals ---------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_bitwise_values_equal_numpy(world: World, table: str) -> None:
    got = _adql(
        world,
        f"SELECT source_id, source_id & 0x7FFFFFFFF AS low, source_id / {HPX12} AS hpx12, "
        "source_id ^ 0x5A5A5A AS flipped, ~source_id AS inverted, (source_id & 0xFF) | 0x100 AS tagged, "
        f"~source_id & 0xFFFF AS low_inverted FROM {table}",
    )
    order = np.argsort(got["source_id"].to_numpy())
    ids = got["source_id"].to_numpy()[order]
    expected = np.sort(_gaia(world)["source_id"])
    assert np.array_equal(ids, expected)

    def column(name: str) -> np.ndarray:
        return got[name].to_numpy()[order]

    assert np.array_equal(column("low"), np.bitwise_and(ids, 0x7FFFFFFFF))
    # SQL's integer division truncates (the sample's Hipparcos stars have negative ids); numpy's floors
    assert np.array_equal(column("hpx12"), np.sign(ids) * (np.abs(ids) // HPX12))
    assert np.array_equal(column("flipped"), np.bitwise_xor(ids, 0x5A5A5A))
    assert np.array_equal(column("inverted"), np.invert(ids))
    assert np.array_equal(column("tagged"), np.bitwise_or(np.bitwise_and(ids, 0xFF), 0x100))
    assert np.array_equal(column("low_inverted"), np.bitwise_and(np.invert(ids), 0xFFFF))


@pytest.mark.parametrize("table", TABLES)
def test_bitwise_conditions_and_aggregates_equal_numpy(world: World, table: str) -> None:
    ids = _gaia(world)["source_id"]  # a Gaia source_id's lowest 7 bits are 0; bits 8 to 21 vary
    got = _adql(
        world,
        f"SELECT source_id & 0x300 AS bits, COUNT(*) AS n FROM {table} "
        "WHERE source_id & 0x400 = 0x400 AND (source_id | 0x1) ^ 0x1 <> 0 GROUP BY source_id & 0x300",
    )
    kept = ids[(np.bitwise_and(ids, 0x400) == 0x400) & (np.bitwise_xor(np.bitwise_or(ids, 1), 1) != 0)]
    values, counts = np.unique(np.bitwise_and(kept, 0x300), return_counts=True)
    rows = sorted(zip(got["bits"].to_pylist(), got["n"].to_pylist(), strict=True))
    assert rows == list(zip(values.tolist(), counts.tolist(), strict=True))
    assert len(rows) == 4 and 1000 < len(kept) < len(ids)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("column", ["ra", "phot_g_mean_mag"])
def test_bitwise_on_a_real_column_is_an_error_at_the_column(world: World, table: str, column: str) -> None:
    with pytest.raises(QuerySyntaxError) as info:
        _adql(world, f"SELECT source_id\nFROM {table}\nWHERE   0x1 | {column} > 0")
    assert (info.value.line, info.value.column) == (3, 15)
    assert f"column {column} of type DOUBLE PRECISION" in str(info.value)


def test_the_qserv_dialect_keeps_mysql_xor(world: World) -> None:
    """`--lang qserv` reads `^` as MySQL's XOR, as before (no ADQL check, no hexadecimal rewrite)."""
    ids = _gaia(world)["source_id"]
    got = world.engine.execute("SELECT source_id, source_id ^ 5 AS x FROM gaia", lang="qserv").table
    order = np.argsort(got["source_id"].to_numpy())
    assert np.array_equal(got["x"].to_numpy()[order], np.bitwise_xor(np.sort(ids), 5))


# compound regions against points on both shard kinds ------------------------------------------------------

ORDER = 14
CIRCLE = (40.0, 10.0, 12.0)
POLYGON = [(60.0, -5.0), (80.0, -5.0), (80.0, 12.0), (60.0, 12.0)]
STCS_CIRCLE = "Circle {} {} {}".format(*CIRCLE)
STCS_POLYGON = "Polygon " + " ".join(f"{lon} {lat}" for lon, lat in POLYGON)


def _cone_moc(lon: float, lat: float, radius: float) -> MOC:
    return MOC.from_cone(
        lon=Longitude(lon * u.deg), lat=Latitude(lat * u.deg), radius=radius * u.deg, max_depth=ORDER
    )


def _polygon_moc() -> MOC:
    lon, lat = zip(*POLYGON, strict=True)
    return MOC.from_polygon(Longitude(list(lon) * u.deg), Latitude(list(lat) * u.deg), max_depth=ORDER)


REGIONS = {
    "union": (f"Union ICRS ({STCS_CIRCLE} {STCS_POLYGON})", lambda: _cone_moc(*CIRCLE).union(_polygon_moc())),
    "intersection": (
        f"Intersection ICRS ({STCS_CIRCLE} Circle 50 10 10)",
        lambda: _cone_moc(*CIRCLE).intersection(_cone_moc(50.0, 10.0, 10.0)),
    ),
    "circle_not_polygon": (
        f"Intersection ({STCS_CIRCLE} Not ({STCS_POLYGON}))",
        lambda: _cone_moc(*CIRCLE).intersection(_polygon_moc().complement()),
    ),
    "not": (f"Not ({STCS_CIRCLE})", lambda: _cone_moc(*CIRCLE).complement()),
}
TOLERANCE = 60 / 3600  # degrees: stars nearer a boundary than this (> 4 cells at order 14) are not called


def _moc_answer(moc: MOC, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each star is in the MOC, and whether that is certain (the same a tolerance away each way)."""
    inside = moc.contains_lonlat(Longitude(ra * u.deg), Latitude(dec * u.deg))
    sure = np.ones(len(ra), dtype=bool)
    for dra, ddec in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        lat = np.clip(dec + ddec * TOLERANCE, -90, 90)
        step = dra * TOLERANCE / np.maximum(np.cos(np.radians(dec)), 1e-6)
        moved = moc.contains_lonlat(Longitude((ra + step) % 360 * u.deg), Latitude(lat * u.deg))
        sure &= moved == inside
    return inside, sure


def _chunks(world: World, query: str) -> set[tuple[int, int]]:
    return {
        chunk for plan in world.engine.plan(query, lang="adql") for job in plan.jobs for chunk in job.chunks
    }


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("name", list(REGIONS))
def test_points_in_a_compound_region_equal_mocpy(world: World, table: str, name: str) -> None:
    stcs, build = REGIONS[name]
    query = f"SELECT source_id FROM {table} WHERE CONTAINS(POINT('ICRS', ra, dec), REGION('{stcs}')) = 1"
    got = set(_adql(world, query)["source_id"].to_pylist())
    gaia = _gaia(world)
    inside, sure = _moc_answer(build(), gaia["ra"], gaia["dec"])
    ids = gaia["source_id"]
    assert {int(i) for i in ids[inside & sure]} <= got
    assert not got & {int(i) for i in ids[~inside & sure]}
    assert inside[sure].sum() > 50 and (~sure).sum() < 0.01 * len(ids)
    # the same through INTERSECTS, which is CONTAINS for a point
    swapped = query.replace("CONTAINS(POINT('ICRS', ra, dec), REGION", "INTERSECTS(REGION").replace(
        "')) = 1", "'), POINT('ICRS', ra, dec)) = 1"
    )
    assert set(_adql(world, swapped)["source_id"].to_pylist()) == got


@pytest.mark.parametrize("table", TABLES)
def test_compound_regions_read_only_the_chunks_they_can_reach(world: World, table: str) -> None:
    everything = _chunks(world, f"SELECT source_id FROM {table}")
    union, _ = REGIONS["union"]
    members = [
        _chunks(world, f"SELECT source_id FROM {table} WHERE CONTAINS(POINT(ra, dec), {shape}) = 1")
        for shape in (f"CIRCLE{CIRCLE}", "POLYGON(" + ", ".join(f"{a}, {b}" for a, b in POLYGON) + ")")
    ]
    read = _chunks(
        world, f"SELECT source_id FROM {table} WHERE CONTAINS(POINT(ra, dec), REGION('{union}')) = 1"
    )
    assert read == members[0] | members[1] and len(read) < len(everything) / 4
    circle_not_polygon, _ = REGIONS["circle_not_polygon"]
    read = _chunks(
        world,
        f"SELECT source_id FROM {table} WHERE CONTAINS(POINT(ra, dec), REGION('{circle_not_polygon}')) = 1",
    )
    assert read == members[0]  # the NOT restricts nothing: the circle's chunks, not fewer
    outside, _ = REGIONS["not"]
    read = _chunks(
        world, f"SELECT source_id FROM {table} WHERE CONTAINS(POINT(ra, dec), REGION('{outside}')) = 1"
    )
    assert read == everything
