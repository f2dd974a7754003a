"""ObsCore's s_region as a geometry-valued column: ADQL region predicates through TAP return the rows an
independent computation (spherical-geometry, mocpy) gives on LSSTCam detector footprints, on PostgreSQL and
on a DuckDB copy alike; migration c0023 backfills the representation of rows written before it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import duckdb
import httpx
import numpy as np
import pyarrow as pa
import pytest
import pyvo
import sqlalchemy as sa
from astropy.coordinates import Latitude, Longitude, SkyCoord
from mocpy import MOC
from regions_support import meets, stcs_polygon, visit_footprints

from dms import migrate
from dms.deployment import Deployment
from dms.query import regions
from dms.query.adql import translate
from dms.schema import felis_schema
from dms.services.vo.server import running_server
from dms.services.vo.tap_schema import sync
from dms.udfs import register_duckdb
from tests.pg_support import control_database, create_database, drop_database, seed_default_shard

log = logging.getLogger(__name__)

# two LSSTCam visits overlapping at different rotations, and a third far away
VISITS = [(150.0, 2.0, 0.0), (150.6, 2.3, 35.0), (10.0, -60.0, 80.0)]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for v, (ra, dec, rotation) in enumerate(VISITS):
        for d, vertices in enumerate(visit_footprints(ra, dec, rotation)):
            text = stcs_polygon(vertices)
            rows.append(
                {
                    "obs_publisher_did": f"ivo://dms.test/raw?v{v}d{d}",
                    "obs_id": f"v{v}d{d}",
                    "dataproduct_type": "image",
                    "calib_level": 1,
                    "obs_collection": "test",
                    "s_ra": ra,
                    "s_dec": dec,
                    "s_region": text,
                    **regions.column_values(text),
                }
            )
    return rows


ROWS = _rows()
SHAPES = {r["obs_id"]: r["s_region_shape"] for r in ROWS}


@dataclass
class Service:
    url: str
    deployment: Deployment


def _insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    columns = ", ".join(rows[0])
    values = ", ".join(f":{k}" for k in rows[0])
    conn.execute(sa.text(f'INSERT INTO ivoa."ObsCore" ({columns}) VALUES ({values})'), rows)


@pytest.fixture(scope="module")
def service(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    name = control_database(pg_server, "regions")
    deployment = Deployment.create(
        tmp_path_factory.mktemp("regions") / "dep", database_url=pg_server.get_uri(name)
    )
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        with deployment.engine().begin() as conn:
            _insert(conn, ROWS)
            conn.execute(
                sa.text(
                    "INSERT INTO cdb_lsstcam.exposure (exposure_id, exposure_name, controller, day_obs, "
                    "seq_num, s_region) VALUES (2026120400001, 'MC_O_20261204_000001', 'O', 20261204, 1, :r)"
                ),
                {"r": ROWS[0]["s_region"]},
            )
            sync(conn, extra=[felis_schema("cdb_lsstcam")])
        with running_server(deployment) as url:
            yield Service(url, deployment)
    finally:
        deployment.dispose()
        drop_database(pg_server, name)


def _expected(region: list[float]) -> tuple[set[str], set[str]]:
    """The obs_ids whose footprint meets `region` by spherical-geometry, and those too close to call."""
    found, unsure = set(), set()
    for obs_id, shape in SHAPES.items():
        answer = meets(shape, region)
        if answer is None:
            unsure.add(obs_id)
        elif answer:
            found.add(obs_id)
    return found, unsure


def _moc_candidates(region: MOC) -> set[str]:
    """The obs_ids whose footprint's MOC (order 14, about 13 arcsec cells) meets the region's MOC."""
    found = set()
    for obs_id, shape in SHAPES.items():
        moc = MOC.from_polygon(Longitude(shape[0::2] * u.deg), Latitude(shape[1::2] * u.deg), max_depth=14)
        if not moc.intersection(region).empty():
            found.add(obs_id)
    return found


def _tap(service: Service, adql: str) -> set[str]:
    result = pyvo.dal.TAPService(f"{service.url}/tap").run_sync(adql, maxrec=100_000)
    return {str(r["obs_id"]) for r in result}


QUERIES = [
    ("circle", "INTERSECTS(CIRCLE('ICRS', 150.3, 2.1, 0.4), s_region) = 1", [150.3, 2.1, 0.4]),
    ("point", "CONTAINS(POINT('ICRS', 150.31, 2.05), s_region) = 1", [150.31, 2.05]),
    (
        "polygon",
        "INTERSECTS(s_region, POLYGON('ICRS', 149.5, 1.5, 150.2, 1.6, 150.0, 2.4)) = 1",
        [149.5, 1.5, 150.2, 1.6, 150.0, 2.4],
    ),
]


@pytest.mark.parametrize(("name", "condition", "region"), QUERIES, ids=[q[0] for q in QUERIES])
def test_region_query_returns_the_footprints_spherical_geometry_finds(
    service: Service, name: str, condition: str, region: list[float]
) -> None:
    got = _tap(service, f"SELECT obs_id FROM ivoa.ObsCore WHERE {condition}")
    expected, unsure = _expected(region)
    assert len(expected) >= 2 and len(unsure) <= 2
    assert got - unsure == expected - unsure
    if len(region) == 3:
        moc = MOC.from_cone(
            lon=Longitude(region[0] * u.deg),
            lat=Latitude(region[1] * u.deg),
            radius=region[2] * u.deg,
            max_depth=14,
        )
    elif len(region) == 2:
        moc = MOC.from_lonlat(Longitude([region[0]] * u.deg), Latitude([region[1]] * u.deg), max_norder=14)
    else:
        moc = MOC.from_polygon(Longitude(region[0::2] * u.deg), Latitude(region[1::2] * u.deg), max_depth=14)
    assert got <= _moc_candidates(moc)  # mocpy's coverage holds every row found


@pytest.mark.parametrize(
    "condition",
    [
        "INTERSECTS(CIRCLE('ICRS', 150.3, 2.1, 0.4), s_region) = 1",
        "CONTAINS(POINT('ICRS', 150.31, 2.05), e.s_region) = 1",
        "INTERSECTS(s_region, POLYGON('ICRS', 149.5, 1.5, 150.2, 1.6, 150.0, 2.4)) = 1",
    ],
)
def test_text_region_column_without_representation_is_refused_by_name(
    service: Service, condition: str
) -> None:
    """ConsDB's exposure.s_region is STC-S text with no representation columns: a geometry predicate on it
    is refused with a message naming the column (it used to reach PostgreSQL as s_region_shape, which the
    table does not have), while the text itself stays selectable and ObsCore's s_region still works."""
    tap = pyvo.dal.TAPService(f"{service.url}/tap")
    with pytest.raises(pyvo.dal.DALQueryError) as caught:
        tap.run_sync(f"SELECT e.exposure_id FROM cdb_lsstcam.exposure AS e WHERE {condition}")
    message = str(caught.value)
    assert "s_region is text with no spatial representation" in message
    assert "s_region_shape" in message and "ObsCore" in message
    rows = tap.run_sync("SELECT s_region FROM cdb_lsstcam.exposure").to_table()
    assert list(rows["s_region"]) == [ROWS[0]["s_region"]]
    shape = SHAPES[ROWS[0]["obs_id"]]
    centre = [float(np.mean(shape[0::2])), float(np.mean(shape[1::2]))]
    assert meets(shape, centre)
    both = _tap(
        service,
        "SELECT o.obs_id FROM ivoa.ObsCore AS o JOIN cdb_lsstcam.exposure AS e ON e.s_region = o.s_region "
        f"WHERE CONTAINS(POINT('ICRS', {centre[0]}, {centre[1]}), o.s_region) = 1",
    )
    assert both == {ROWS[0]["obs_id"]}


def test_region_union_is_the_union_of_its_members(service: Service) -> None:
    union = "REGION('Union ICRS (Circle 150.3 2.1 0.2 Polygon 149.5 1.5 150.2 1.6 150.0 2.4)')"
    got = _tap(service, f"SELECT obs_id FROM ivoa.ObsCore WHERE INTERSECTS(s_region, {union}) = 1")
    circle = _tap(
        service, "SELECT obs_id FROM ivoa.ObsCore WHERE INTERSECTS(s_region, CIRCLE(150.3, 2.1, 0.2)) = 1"
    )
    polygon = _tap(service, f"SELECT obs_id FROM ivoa.ObsCore WHERE {QUERIES[2][1]}")
    assert got == circle | polygon and circle - polygon and polygon - circle


NOT_CIRCLE = [150.3, 2.1, 0.4]
NOT_POLYGON = [149.5, 1.5, 150.2, 1.6, 150.0, 2.4]


def test_footprints_inside_a_not_region_are_those_that_avoid_its_member(service: Service) -> None:
    """CONTAINS(s_region, NOT (B)): the footprints that do not meet B (issue 17), also within an INTERSECTION
    of NOTs (the footprints that meet neither member)."""
    circle = "Circle ICRS {} {} {}".format(*NOT_CIRCLE)
    polygon = "Polygon ICRS " + " ".join(map(str, NOT_POLYGON))
    got = _tap(
        service, f"SELECT obs_id FROM ivoa.ObsCore WHERE CONTAINS(s_region, REGION('Not ({circle})')) = 1"
    )
    meets_circle, unsure = _expected(NOT_CIRCLE)
    assert got - unsure == set(SHAPES) - meets_circle - unsure
    assert len(got) > 150 and len(meets_circle) >= 2
    both = f"Intersection (Not ({circle}) Not ({polygon}))"
    got = _tap(service, f"SELECT obs_id FROM ivoa.ObsCore WHERE CONTAINS(s_region, REGION('{both}')) = 1")
    meets_polygon, unsure_polygon = _expected(NOT_POLYGON)
    unsure |= unsure_polygon
    assert got - unsure == set(SHAPES) - meets_circle - meets_polygon - unsure
    assert meets_polygon - meets_circle and len(got) > 150


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("Not (Circle 150.3 2.1 0.4)", "INTERSECTS of a REGION NOT with a region column is not supported"),
        (
            "Intersection (Circle 150.3 2.1 0.4 Circle 150.4 2.1 0.4)",
            "INTERSECTS of a REGION INTERSECTION with a region column is not supported",
        ),
    ],
)
def test_regions_dms_cannot_decide_are_a_clear_error(service: Service, region: str, message: str) -> None:
    query = f"SELECT obs_id FROM ivoa.ObsCore WHERE INTERSECTS(s_region, REGION('{region}')) = 1"
    response = httpx.get(f"{service.url}/tap/sync", params={"LANG": "ADQL", "QUERY": query}, timeout=60)
    assert response.status_code == 400, response.text
    assert '<INFO name="QUERY_STATUS" value="ERROR">' in response.text and message in response.text


def test_bitwise_operators_on_obscore_columns(service: Service) -> None:
    """ADQL 2.1 bitwise operators and hexadecimal literals on the control database (PostgreSQL)."""
    got = _tap(service, "SELECT obs_id FROM ivoa.ObsCore WHERE (calib_level | 0x2) ^ 0x1 = 0x2")
    assert got == set(SHAPES)  # calib_level is 1: (1 | 2) ^ 1 = 2
    query = "SELECT obs_id FROM ivoa.ObsCore WHERE s_ra & 1 = 0"
    response = httpx.get(f"{service.url}/tap/sync", params={"LANG": "ADQL", "QUERY": query}, timeout=60)
    assert response.status_code == 400, response.text
    message = "line 1, column 39: the bitwise operator &amp; needs integers, got column s_ra of type"
    assert message in response.text


def test_footprint_pairs_between_visits_equal_spherical_geometry(service: Service) -> None:
    """A self-join: which detectors of visit 0 overlap which of visit 1 (polygon-polygon on two columns)."""
    started = time.monotonic()
    got = _tap(
        service,
        "SELECT a.obs_id || ' ' || b.obs_id AS obs_id FROM ivoa.ObsCore AS a JOIN ivoa.ObsCore AS b "
        "ON INTERSECTS(a.s_region, b.s_region) = 1 WHERE a.obs_id LIKE 'v0d%' AND b.obs_id LIKE 'v1d%'",
    )

    log.info("self-join of %d x %d footprints: %.1f s", 189, 189, time.monotonic() - started)
    first = [k for k in SHAPES if k.startswith("v0d")]
    second = [k for k in SHAPES if k.startswith("v1d")]

    def centres(keys: list[str]) -> SkyCoord:
        shapes = [SHAPES[k] for k in keys]
        return SkyCoord(
            [np.mean(s[0::2]) for s in shapes] * u.deg, [np.mean(s[1::2]) for s in shapes] * u.deg
        )

    # detectors are 0.32 degrees across: pairs whose centres are further apart than that cannot meet
    near = centres(first)[:, None].separation(centres(second)[None, :]).deg < 0.4
    expected = {
        f"{a} {b}"
        for i, a in enumerate(first)
        for j, b in enumerate(second)
        if near[i, j] and meets(SHAPES[a], SHAPES[b])
    }
    assert len(expected) > 50 and got == expected


def test_duckdb_copy_returns_the_same_rows(service: Service) -> None:
    conn = duckdb.connect()
    register_duckdb(conn)
    conn.execute("CREATE SCHEMA ivoa")
    table = pa.table(
        {
            "obs_id": [r["obs_id"] for r in ROWS],
            "s_region": [r["s_region"] for r in ROWS],
            "s_region_shape": pa.array([r["s_region_shape"] for r in ROWS], pa.list_(pa.float64())),
            "s_region_moc": pa.array([r["s_region_moc"] for r in ROWS], pa.list_(pa.int64())),
        }
    )
    conn.register("obscore_rows", table)
    conn.execute("CREATE TABLE ivoa.ObsCore AS SELECT * FROM obscore_rows")
    for _, condition, _ in QUERIES:
        adql = f"SELECT obs_id FROM ivoa.ObsCore WHERE {condition}"
        in_duckdb = {r[0] for r in conn.execute(translate(adql, "duckdb")).fetchall()}
        assert in_duckdb == _tap(service, adql) and in_duckdb


def test_migration_backfills_rows_written_before_it(pg_server: Any, tmp_path: Any) -> None:
    name = create_database(pg_server, "backfill")
    deployment = Deployment.create(tmp_path / "dep", database_url=pg_server.get_uri(name))
    try:
        migrate.upgrade(deployment, "c0020")
        old = [{k: v for k, v in r.items() if not k.startswith("s_region_")} for r in ROWS[:20]]
        old.append(
            {
                **old[0],
                "obs_publisher_did": "ivo://dms.test/raw?bad",
                "obs_id": "bad",
                "s_region": "CIRCLE 1 2",
            }
        )
        old.append(
            {**old[0], "obs_publisher_did": "ivo://dms.test/raw?none", "obs_id": "none", "s_region": None}
        )
        with deployment.engine().begin() as conn:
            _insert(conn, old)
        migrate.upgrade(deployment)
        with deployment.engine().begin() as conn:
            stored = {
                r.obs_id: r
                for r in conn.execute(
                    sa.text('SELECT obs_id, s_region, s_region_shape, s_region_moc FROM ivoa."ObsCore"')
                )
            }
        for row in ROWS[:20]:
            assert stored[row["obs_id"]].s_region_shape == row["s_region_shape"]
            assert stored[row["obs_id"]].s_region_moc == row["s_region_moc"]
        # a text that is not STC-S keeps its text and gets no shape; nothing is lost
        assert stored["bad"].s_region == "CIRCLE 1 2" and stored["bad"].s_region_shape is None
        assert stored["none"].s_region_shape is None
        migrate.downgrade(deployment, "c0020")
        with deployment.engine().begin() as conn:
            columns = conn.execute(
                sa.text(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'ivoa' "
                    "AND table_name = 'ObsCore' AND column_name LIKE 's_region%'"
                )
            ).scalars()
            assert list(columns) == ["s_region"]
    finally:
        deployment.dispose()
        drop_database(pg_server, name)
