"""Region columns in catalog tables (`dms load --region`): LSSTCam detector footprints, some across RA = 0
and some around the north pole, loaded onto a DuckDB and a PostgreSQL shard; ADQL INTERSECTS and CONTAINS
through `dms query` and TAP return the footprints STScI's spherical-geometry finds, on both shard kinds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyvo
import sqlalchemy as sa
from catalog_fixtures import new_database
from click.testing import CliRunner
from regions_support import meets, stcs_polygon, visit_footprints

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.services.vo.server import running_server

# (ra, dec, rotation) of LSSTCam visits: one across RA = 0, one around the north pole, one on the equator
VISITS = [(0.0, -30.0, 20.0), (45.0, 88.6, 0.0), (150.0, 2.0, 35.0)]
TABLES = {"duckdb": "cat.footprints_duck", "postgres": "cat.footprints_pg"}


def _centre(vertices: list[float]) -> tuple[float, float]:
    """The direction of the mean of the vertices' unit vectors (the row's position, for partitioning)."""
    lon, lat = np.radians(vertices[0::2]), np.radians(vertices[1::2])
    x, y, z = (np.cos(lat) * np.cos(lon)).sum(), (np.cos(lat) * np.sin(lon)).sum(), np.sin(lat).sum()
    return float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.degrees(np.arctan2(z, np.hypot(x, y))))


def _rows() -> pa.Table:
    ids, ras, decs, texts = [], [], [], []
    for v, (ra, dec, rotation) in enumerate(VISITS):
        for d, vertices in enumerate(visit_footprints(ra, dec, rotation)):
            centre = _centre(vertices)
            ids.append(v * 1000 + d)
            ras.append(centre[0])
            decs.append(centre[1])
            texts.append(stcs_polygon(vertices))
    ids.append(9999)  # a detector without a footprint: stored, found by no region predicate
    ras.append(10.0)
    decs.append(10.0)
    texts.append(None)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ra": ras,
            "dec": decs,
            "footprint": pa.array(texts, pa.string()),
        }
    )


ROWS = _rows()
# each footprint as its STC-S text says, read here without DMS's parser
SHAPES = {
    i: [float(w) for w in t.split()[2:]]
    for i, t in zip(ROWS["id"].to_pylist(), ROWS["footprint"].to_pylist(), strict=True)
    if t is not None
}


def _cli(deployment: Deployment, *args: str) -> Any:
    return CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args])


@pytest.fixture(scope="module")
def deployment(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("catalog_regions")
    deployment = Deployment.create(directory / "dep", database_url=new_database(pg_server))
    deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
    deployment.add_shard(ShardConfig(name="pg", kind="postgres", url=new_database(pg_server)))
    list(migrate.upgrade(deployment))
    path = directory / "footprints.parquet"
    pq.write_table(ROWS, path)
    for storage, table in TABLES.items():
        result = _cli(
            deployment,
            *("load", "--create", table, str(path), "--ra", "ra", "--dec", "dec", "--id", "id"),
            *("--region", "footprint", "--storage", storage, "--chunk-order", "4", "-q"),
        )
        assert result.exit_code == 0, result.output
    try:
        yield deployment
    finally:
        deployment.dispose()


def _expected(region: list[float]) -> tuple[set[int], set[int]]:
    """The ids whose footprint meets `region` by spherical-geometry, and those too close to call."""
    found, unsure = set(), set()
    for row_id, shape in SHAPES.items():
        answer = meets(shape, region)
        if answer is None:
            unsure.add(row_id)
        elif answer:
            found.add(row_id)
    return found, unsure


QUERIES = [
    ("circle-across-ra0", "INTERSECTS(CIRCLE('ICRS', 0.1, -30.2, 0.5), footprint) = 1", [0.1, -30.2, 0.5]),
    ("point-across-ra0", "CONTAINS(POINT('ICRS', 359.8, -29.9), footprint) = 1", [359.8, -29.9]),
    (
        "polygon-across-ra0",
        "INTERSECTS(footprint, POLYGON('ICRS', 359.5, -30.5, 0.6, -30.4, 0.3, -29.6)) = 1",
        [359.5, -30.5, 0.6, -30.4, 0.3, -29.6],
    ),
    ("circle-near-pole", "INTERSECTS(CIRCLE('ICRS', 45.0, 88.5, 0.7), footprint) = 1", [45.0, 88.5, 0.7]),
    (
        "polygon-around-pole",
        "INTERSECTS(POLYGON('ICRS', 0, 89.2, 90, 89.2, 180, 89.2, 270, 89.2), footprint) = 1",
        [0, 89.2, 90, 89.2, 180, 89.2, 270, 89.2],
    ),
    ("point-equator", "CONTAINS(POINT('ICRS', 150.05, 2.02), footprint) = 1", [150.05, 2.02]),
]
DUCKDB_CASES = {"polygon-across-ra0", "circle-near-pole", "point-equator"}


# DuckDB binds adql_intersects' nested macros slowly (seconds per query and chunk file): it answers fewer
# the DuckDB polygon and near-pole cases take ~100 s each: run under -m slow; the normal run keeps the
# point case on DuckDB shards and every case on PostgreSQL shards (the same SQL functions, tested equal)
DUCKDB_SLOW = {"polygon-across-ra0", "circle-near-pole"}
CASES = [pytest.param("postgres", *q, id=f"postgres-{q[0]}") for q in QUERIES] + [
    pytest.param("duckdb", *q, id=f"duckdb-{q[0]}", marks=[pytest.mark.slow] if q[0] in DUCKDB_SLOW else [])
    for q in QUERIES
    if q[0] in DUCKDB_CASES
]


@pytest.mark.parametrize(("storage", "name", "condition", "region"), CASES)
def test_dms_query_returns_the_footprints_spherical_geometry_finds(
    deployment: Deployment, storage: str, name: str, condition: str, region: list[float]
) -> None:
    result = _cli(
        deployment,
        *("query", "--lang", "adql", "--format", "json"),
        f"SELECT id FROM {TABLES[storage]} WHERE {condition}",
    )
    assert result.exit_code == 0, result.output
    got = {row[0] for row in json.loads(result.output)["rows"]}
    expected, unsure = _expected(region)
    assert len(expected) >= 1 and len(unsure) <= 2
    assert got - unsure == expected - unsure


def test_tap_answers_on_both_shard_kinds_and_publishes_the_region(deployment: Deployment) -> None:
    with running_server(deployment) as url:
        tap = pyvo.dal.TAPService(f"{url}/tap")
        for (_, condition, region), table in zip(QUERIES[:2], TABLES.values(), strict=True):
            expected, unsure = _expected(region)
            rows = tap.run_sync(f"SELECT id FROM {table} WHERE {condition}", maxrec=10_000).to_table()
            assert {int(i) for i in rows["id"]} - unsure == expected - unsure, (table, condition)
    with deployment.connect() as conn:
        published = conn.execute(
            sa.text("SELECT column_name, datatype, xtype FROM tap_schema.columns WHERE table_name = :t"),
            {"t": TABLES["postgres"]},
        ).all()
    columns = {name: (datatype, xtype) for name, datatype, xtype in published}
    # as ObsCore's s_region: text without an xtype (stilts taplint refuses an xtype element in /tables), and
    # the representation published too, as SELECT * returns it
    assert columns["footprint"] == ("char", None)
    assert columns["footprint_shape"] == ("double", None) and columns["footprint_moc"] == ("long", None)


def test_postgres_shard_indexes_the_cells(deployment: Deployment) -> None:
    shard = next(s for s in deployment.shards() if s.kind == "postgres")
    with psycopg.connect(shard.conninfo) as conn:
        definitions = [
            r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname LIKE '%moc'")
        ]
    assert len(definitions) == 1 and "USING gin (footprint_moc)" in definitions[0]


def test_a_row_that_is_no_region_is_refused_with_its_number_and_nothing_is_loaded(
    deployment: Deployment, tmp_path: Path
) -> None:
    bad = ROWS.slice(0, 5).set_column(
        3,
        "footprint",
        pa.array([*ROWS["footprint"].to_pylist()[:3], "POLYGON ICRS 10 20 11", None], pa.string()),
    )
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path)
    result = _cli(
        deployment,
        *("load", "--create", "cat.bad_footprints", str(path), "--ra", "ra", "--dec", "dec", "--id", "id"),
        *("--region", "footprint", "-q"),
    )
    assert result.exit_code != 0
    assert "row 4" in result.output and "POLYGON ICRS 10 20 11" in result.output
    with deployment.connect() as conn:
        found = conn.execute(
            sa.text("SELECT count(*) FROM dms.catalog_table WHERE name = 'cat.bad_footprints'")
        )
        assert found.scalar_one() == 0
