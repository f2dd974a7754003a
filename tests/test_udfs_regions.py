"""adql_intersects (udfs/*/60_regions.sql) on PostgreSQL and DuckDB: equal to each other and to an
independent answer (spherical-geometry) on LSSTCam detector footprints, circles and points near them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import pytest
from regions_support import meets, visit_footprints

from dms.udfs import install_postgres, register_duckdb
from tests.pg_support import create_database, drop_database

Shape = list[float]


def _pairs() -> list[tuple[Shape, Shape]]:
    """Detector footprints against each other (neighbours touch or nearly), and against circles and points
    scattered over and around them, with polygons in both orientations."""
    rng = np.random.default_rng(17)
    footprints = visit_footprints(150.0, 2.0, 20.0)[:24] + visit_footprints(10.0, -60.0, 75.0)[:12]
    pairs: list[tuple[Shape, Shape]] = []
    for i, a in enumerate(footprints):
        for b in footprints[i + 1 : i + 6]:
            pairs.append((a, b))
        centre = [float(np.mean(a[0::2])), float(np.mean(a[1::2]))]
        for _ in range(4):
            offset = rng.normal(0, 0.15, 2)
            point = [
                centre[0] + float(offset[0]) / np.cos(np.radians(centre[1])),
                centre[1] + float(offset[1]),
            ]
            pairs.append((point, a))
            pairs.append(([*point, float(rng.uniform(0.005, 0.1))], a))
            reversed_polygon = [c for k in range(len(a) // 2 - 1, -1, -1) for c in a[2 * k : 2 * k + 2]]
            pairs.append((reversed_polygon, [*point, float(rng.uniform(0.005, 0.1))]))
    # a thin polygon crossing a square with no vertex of either inside the other: only edges cross
    pairs.append(([10.0, 10.0, 11.0, 10.0, 11.0, 11.0, 10.0, 11.0], [10.5, 9.5, 10.6, 11.5, 10.4, 11.5]))
    pairs.append(
        ([10.0, 10.0, 11.0, 10.0, 11.0, 11.0, 10.0, 11.0], [190.5, -9.5, 190.6, -11.5, 190.4, -11.5])
    )
    return pairs


PAIRS = _pairs()


@pytest.fixture(scope="module")
def postgres_answers(pg_server: Any) -> list[int | None]:
    name = create_database(pg_server, "regions")
    try:
        with psycopg.connect(pg_server.get_uri(name), autocommit=True) as conn:
            install_postgres(conn)
            conn.execute("CREATE TABLE pairs (i integer, a double precision[], b double precision[])")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO pairs VALUES (%s, %s, %s)", [(i, a, b) for i, (a, b) in enumerate(PAIRS)]
                )
            return [r[0] for r in conn.execute("SELECT adql_intersects(a, b) FROM pairs ORDER BY i")]
    finally:
        drop_database(pg_server, name)


@pytest.fixture(scope="module")
def duckdb_answers() -> Iterator[list[int | None]]:
    conn = duckdb.connect()
    register_duckdb(conn)
    pairs = pa.table(
        {
            "i": list(range(len(PAIRS))),
            "a": pa.array([a for a, _ in PAIRS], pa.list_(pa.float64())),
            "b": pa.array([b for _, b in PAIRS], pa.list_(pa.float64())),
        }
    )
    conn.register("pairs", pairs)
    yield [r[0] for r in conn.execute("SELECT adql_intersects(a, b) FROM pairs ORDER BY i").fetchall()]
    conn.close()


def test_backends_agree(postgres_answers: list[int | None], duckdb_answers: list[int | None]) -> None:
    assert postgres_answers == duckdb_answers


def test_intersections_equal_spherical_geometry(postgres_answers: list[int | None]) -> None:
    truth = [meets(a, b) for a, b in PAIRS]
    decided = [
        (t, got, pair) for t, got, pair in zip(truth, postgres_answers, PAIRS, strict=True) if t is not None
    ]
    assert len(decided) > 0.95 * len(PAIRS)  # only a few are within 0.1 arcsec of touching
    wrong = [(pair, t, got) for t, got, pair in decided if int(t) != got]
    assert wrong == []
    hits = sum(t for t, _, _ in decided)
    assert 0.2 * len(decided) < hits < 0.8 * len(decided)  # the cases are not all one answer


def test_edges_crossing_without_a_vertex_inside(postgres_answers: list[int | None]) -> None:
    assert postgres_answers[-2:] == [1, 0]  # the antipodal copy of the thin polygon meets nothing


def test_null_and_malformed_regions_give_null() -> None:
    conn = duckdb.connect()
    register_duckdb(conn)
    row = conn.execute(
        "SELECT adql_intersects(NULL::DOUBLE[], [1.0, 2.0]), "
        "adql_intersects([1.0, 2.0, 3.0, 4.0], [1.0, 2.0])"
    ).fetchone()
    assert row == (None, None)
