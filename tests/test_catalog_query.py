"""Every supported query over the partitioned catalog equals the same query on one unpartitioned DuckDB copy.

The same real data (a sky-wide Gaia DR3 sample, Hipparcos matched to it, a synthetic child table and a
replicated table) is loaded into: one DuckDB shard; three DuckDB shards (also queried through a
dask.distributed LocalCluster); and two PostgreSQL shards on two separate PostgreSQL servers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.query.engine import QueryEngine
from dms.query.errors import QueryCancelled, QueryError, QueryTimeout
from tests.catalog_fixtures import (
    Sample,
    add_postgres_shards,
    canonical_rows,
    make_sample,
    reference,
    reference_connection,
)
from tests.hypothesis_profiles import examples
from tests.pg_support import control_database, drop_database, seed_default_shard, shard_database

CONFIGS = ("duckdb-1", "duckdb-3", "postgres-2", "dask")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return make_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def ref(sample: Sample) -> Iterator[object]:
    conn = reference_connection(sample)
    yield conn
    conn.close()


def _load(deployment: Deployment, sample: Sample, storage: str, replicas: int = 1) -> None:
    files = sample.files
    load_files(
        deployment,
        "gaia",
        [files["gaia"]],
        progress=False,
        create=TableOptions(
            ra="ra",
            dec="dec",
            id="source_id",
            chunk_order=2,
            max_chunk_rows=1_500,
            storage=storage,
            replicas=replicas,
        ),
    )
    load_files(
        deployment,
        "obs",
        [files["obs"]],
        progress=False,
        create=TableOptions(role="child", director="gaia", director_key="source_id"),
    )
    load_files(
        deployment,
        "hip",
        [files["hip"]],
        progress=False,
        create=TableOptions(ra="ra", dec="dec", id="hip", like="gaia", storage=storage, replicas=replicas),
    )
    load_files(
        deployment,
        "bands",
        [files["bands"]],
        progress=False,
        create=TableOptions(role="replicated", storage=storage),
    )


@pytest.fixture(scope="module")
def deployments(
    sample: Sample, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployment]]:
    """Three deployments (control databases on the session's server): one DuckDB shard, three DuckDB shards
    with two replicas of each chunk, and two PostgreSQL shards."""
    from dms import migrate

    made: dict[str, Deployment] = {}
    created: list[str] = []

    def deployment(directory: str) -> Deployment:
        created.append(control_database(pg_server, directory))
        url = pg_server.get_uri(created[-1])
        new = Deployment.create(tmp_path_factory.mktemp(directory), database_url=url)
        seed_default_shard(new, pg_server)
        return new

    one = deployment("d1")
    migrate.upgrade(one)
    _load(one, sample, "duckdb")
    made["duckdb-1"] = one
    three = deployment("d3")
    for name in ("shard1", "shard2"):
        three.add_shard(ShardConfig(name=name, kind="duckdb", path=f"catalog/{name}.duckdb"))
    migrate.upgrade(three)
    _load(three, sample, "duckdb", replicas=2)  # every chunk on two of the three shards
    made["duckdb-3"] = three
    pg = deployment("dp")
    created += [shard_database(pg_server, "dps") for _ in range(2)]
    add_postgres_shards(pg, [pg_server.get_uri(name) for name in created[-2:]])
    _load(pg, sample, "postgres", replicas=2)
    made["postgres-2"] = pg
    yield made
    for each in made.values():
        each.dispose()
    drop_database(pg_server, *created)


@pytest.fixture(scope="module")
def engines(deployments: dict[str, Deployment]) -> Iterator[dict[str, QueryEngine]]:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    made = {name: QueryEngine(d) for name, d in deployments.items()}
    made["dask"] = QueryEngine(deployments["duckdb-3"], dask_client=client)
    yield made
    for engine in made.values():
        engine.close()
    client.close()
    cluster.close()


QUERIES = [
    # projections, filters, spatial restrictions of every kind
    "SELECT source_id, ra, dec FROM gaia WHERE scisql_s2PtInCircle(ra, dec, 83.6, 22.0, 5) = 1",
    "SELECT source_id FROM gaia WHERE scisql_angSep(ra, dec, 266.4, -29.0) < 3",
    "SELECT source_id FROM gaia WHERE 2.5 > scisql_angSep(10.0, 41.2, ra, dec)",
    "SELECT source_id, phot_g_mean_mag FROM gaia WHERE ra BETWEEN 350 AND 360 AND dec BETWEEN -5 AND 5",
    "SELECT source_id FROM gaia WHERE scisql_s2PtInBox(ra, dec, 355, -3, 5, 3) = 1",
    "SELECT source_id FROM gaia WHERE scisql_s2PtInCPoly(ra, dec, 10, 10, 20, 10, 20, 20, 10, 20) = 1",
    "SELECT source_id FROM gaia WHERE scisql_s2PtInEllipse(ra, dec, 150, 2, 7200, 3600, 30) = 1",
    # the Qserv dialect, checked against its scisql equivalent (the reference database has no areaspecs)
    "SELECT source_id FROM gaia WHERE qserv_areaspec_box(40, -10, 50, 0) AND phot_g_mean_mag < 9"
    " -- SELECT source_id FROM gaia WHERE scisql_s2PtInBox(ra, dec, 40, -10, 50, 0) = 1 AND phot_g_mean_mag < 9",
    "SELECT source_id FROM gaia WHERE qserv_areaspec_circle(200, 60, 4)"
    " -- SELECT source_id FROM gaia WHERE scisql_s2PtInCircle(ra, dec, 200, 60, 4) = 1",
    "SELECT source_id FROM gaia WHERE scisql_s2PtInCircle(ra, dec, 10, 10, 3) = 1 "
    "OR scisql_s2PtInCircle(ra, dec, 200, -40, 3) = 1",
    "SELECT source_id FROM gaia WHERE dec > 89 OR dec < -89.5",
    # aggregates
    "SELECT COUNT(*) FROM gaia",
    "SELECT COUNT(*) AS n, SUM(phot_g_mean_mag) AS s, AVG(phot_g_mean_mag) AS a, MIN(ra) AS lo, MAX(dec) AS hi "
    "FROM gaia WHERE dec BETWEEN 10 AND 40",
    "SELECT COUNT(DISTINCT floor(ra)) AS n, COUNT(*) AS m FROM gaia WHERE dec > 60",
    "SELECT floor(phot_g_mean_mag) AS g, COUNT(*) AS n, AVG(dec) AS d FROM gaia GROUP BY floor(phot_g_mean_mag) "
    "HAVING COUNT(*) > 100",
    "SELECT floor(dec / 10) AS band, COUNT(*) AS n FROM gaia GROUP BY 1 ORDER BY n DESC, band LIMIT 4",
    "SELECT floor(dec / 10) AS band, STDDEV(phot_g_mean_mag) AS s, VARIANCE(ra) AS v FROM gaia GROUP BY 1",
    "SELECT COUNT(*) FROM gaia WHERE phot_g_mean_mag < 0",
    "SELECT floor(ra / 30) AS r, MAX(phot_g_mean_mag) - MIN(phot_g_mean_mag) AS spread FROM gaia GROUP BY 1 "
    "ORDER BY MAX(phot_g_mean_mag) - MIN(phot_g_mean_mag) DESC, r LIMIT 3",
    # order, limit, offset, distinct
    "SELECT source_id, phot_g_mean_mag FROM gaia ORDER BY phot_g_mean_mag, source_id LIMIT 7",
    "SELECT source_id FROM gaia ORDER BY source_id DESC LIMIT 5 OFFSET 20",
    "SELECT DISTINCT floor(phot_g_mean_mag) AS g FROM gaia",
    "SELECT source_id FROM gaia WHERE source_id IN (SELECT source_id FROM obs WHERE visit = 3 AND band = 'g')",
    # id restrictions
    "SELECT * FROM gaia WHERE source_id = 4295806720 OR source_id = 5764607523034234880",
    # director-child joins, child-child, replicated joins
    "SELECT g.source_id, o.band, o.flux FROM gaia g JOIN obs o ON o.source_id = g.source_id "
    "WHERE scisql_s2PtInCircle(g.ra, g.dec, 120, -30, 6) = 1",
    "SELECT o.band, COUNT(*) AS n, AVG(g.phot_g_mean_mag) AS m FROM gaia g JOIN obs o USING (source_id) "
    "GROUP BY o.band",
    "SELECT b.wavelength_nm, COUNT(*) AS n FROM obs o JOIN bands b ON b.band = o.band GROUP BY b.wavelength_nm",
    "SELECT o1.obs_id, o2.obs_id FROM obs o1 JOIN obs o2 ON o1.source_id = o2.source_id "
    "WHERE o1.obs_id < o2.obs_id AND o1.visit = 7",
    "SELECT g.source_id, COUNT(o.obs_id) AS n FROM gaia g LEFT JOIN obs o ON o.source_id = g.source_id "
    "AND o.visit < 5 WHERE g.dec > 70 GROUP BY g.source_id",
    "SELECT * FROM bands ORDER BY wavelength_nm",
    # near-neighbour self-join and crossmatch within the overlap
    # (dec bands keep the reference database's nested-loop join affordable)
    "SELECT a.source_id, b.source_id FROM gaia a JOIN gaia b ON scisql_angSep(a.ra, a.dec, b.ra, b.dec) < 0.015 "
    "WHERE a.source_id <> b.source_id AND a.dec BETWEEN 10 AND 20 AND b.dec BETWEEN 9 AND 21",
    "SELECT h.hip, g.source_id FROM hip h JOIN gaia g ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.003 "
    "WHERE h.dec BETWEEN -30 AND -20 AND g.dec BETWEEN -31 AND -19",
    "SELECT COUNT(*) AS pairs FROM gaia g, hip h WHERE scisql_s2PtInCircle(h.ra, h.dec, g.ra, g.dec, 0.01) = 1 "
    "AND g.dec BETWEEN 40 AND 50 AND h.dec BETWEEN 39 AND 51",
    "SELECT h.hip, g.source_id FROM hip h LEFT JOIN gaia g ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.002 "
    "AND g.dec BETWEEN 19 AND 26 WHERE h.dec BETWEEN 20 AND 25",
    # subqueries, WITH, set operations
    "SELECT m.g, m.n FROM (SELECT floor(phot_g_mean_mag) AS g, COUNT(*) AS n FROM gaia GROUP BY 1) m "
    "WHERE m.n > 10",
    "WITH bright AS (SELECT source_id, ra FROM gaia WHERE phot_g_mean_mag < 6) "
    "SELECT COUNT(*) AS n, MAX(ra) AS r FROM bright",
    "SELECT source_id FROM gaia WHERE dec > 80 UNION SELECT source_id FROM gaia WHERE dec < -85",
    "SELECT floor(ra) AS r FROM gaia WHERE dec > 85 EXCEPT SELECT floor(ra) FROM gaia WHERE dec > 87",
    "SELECT source_id FROM gaia WHERE phot_g_mean_mag = (SELECT MIN(phot_g_mean_mag) FROM gaia)",
]

REFUSED = [
    ("SELECT a.source_id FROM gaia a, gaia b WHERE a.ra < b.ra", "chunk by chunk"),
    ("SELECT a.source_id FROM gaia a JOIN gaia b ON scisql_angSep(a.ra, a.dec, b.ra, b.dec) < 1", "overlap"),
    (
        "SELECT source_id FROM gaia g WHERE EXISTS (SELECT 1 FROM obs o WHERE o.source_id = g.source_id)",
        "correlated",
    ),
    ("DELETE FROM gaia", "only SELECT"),
    ("SELECT 1; DROP TABLE gaia", "exactly one"),
    ("SELECT * FROM dms.catalog_table", "not a table that can be queried"),
    ("SELECT nope FROM gaia", "nope"),
    ("SELECT * FROM nosuchtable", "nosuchtable"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ra) FROM gaia", "cannot be computed across chunks"),
    ("SELECT source_id, row_number() OVER (ORDER BY ra) FROM gaia", "window functions"),
]


_REFERENCE: dict[str, object] = {}


def _reference_cached(ref: object, sql: str) -> object:
    """The reference answer, computed once per query for all configurations."""
    if sql not in _REFERENCE:
        _REFERENCE[sql] = reference(ref, sql)  # type: ignore[arg-type]
    return _REFERENCE[sql]


def _ordered(sql: str) -> bool:
    return " ORDER BY " in sql and " LIMIT " in sql and "UNION" not in sql


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sql", QUERIES)
def test_query_equals_unpartitioned_copy(
    engines: dict[str, QueryEngine], ref: object, config: str, sql: str
) -> None:
    sql, _, ref_sql = sql.partition(" -- ")
    expected = _reference_cached(ref, ref_sql or sql)
    got = engines[config].execute(sql).table
    assert got.num_columns == expected.num_columns
    assert canonical_rows(got, _ordered(sql)) == canonical_rows(expected, _ordered(sql))


@pytest.mark.parametrize("config", ["duckdb-1", "postgres-2"])
@pytest.mark.parametrize(("sql", "reason"), REFUSED)
def test_unevaluable_queries_are_refused(
    engines: dict[str, QueryEngine], config: str, sql: str, reason: str
) -> None:
    with pytest.raises(QueryError, match=reason):
        engines[config].execute(sql)


def test_nearest_neighbour_queries_actually_find_pairs(engines: dict[str, QueryEngine]) -> None:
    """The crossmatch checks above compare non-empty results."""
    result = engines["duckdb-3"].execute(
        "SELECT h.hip, g.source_id FROM hip h JOIN gaia g ON scisql_angSep(h.ra, h.dec, g.ra, g.dec) < 0.003"
    )
    assert result.table.num_rows > 1000


cone = st.tuples(st.floats(0, 360), st.floats(-90, 90), st.floats(0.05, 25))
columns = st.lists(
    st.sampled_from(["source_id", "ra", "dec", "phot_g_mean_mag", "mag_b"]),
    min_size=1,
    max_size=4,
    unique=True,
)
aggregates = st.lists(
    st.sampled_from(
        [
            "COUNT(*)",
            "SUM(phot_g_mean_mag)",
            "AVG(dec)",
            "MIN(ra)",
            "MAX(mag_c)",
            "COUNT(DISTINCT floor(dec))",
            "COUNT(mag_b)",
        ]
    ),
    min_size=1,
    max_size=3,
    unique=True,
)


@st.composite
def where_clauses(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        ra, dec, r = draw(cone)
        parts.append(f"scisql_s2PtInCircle(ra, dec, {ra:.6f}, {dec:.6f}, {r:.4f}) = 1")
    if draw(st.booleans()):
        low = draw(st.floats(-90, 80))
        parts.append(f"dec BETWEEN {low:.4f} AND {low + draw(st.floats(0.5, 40)):.4f}")
    if draw(st.booleans()):
        parts.append(f"phot_g_mean_mag < {draw(st.floats(3, 10)):.3f}")
    return " WHERE " + " AND ".join(parts) if parts else ""


@st.composite
def generated_queries(draw: st.DrawFn) -> str:
    where = draw(where_clauses())
    if draw(st.booleans()):
        group = draw(st.sampled_from(["", "floor(phot_g_mean_mag)", "floor(ra / 45)"]))
        select = ", ".join(f"{a} AS a{i}" for i, a in enumerate(draw(aggregates)))
        if group:
            return f"SELECT {group} AS k, {select} FROM gaia{where} GROUP BY {group}"
        return f"SELECT {select} FROM gaia{where}"
    cols = draw(columns)
    limit = draw(
        st.sampled_from(["", " ORDER BY source_id LIMIT 9", " ORDER BY dec DESC, source_id LIMIT 4 OFFSET 2"])
    )
    distinct = "DISTINCT " if draw(st.booleans()) and not limit else ""
    if limit and "source_id" not in cols:
        cols = [*cols, "source_id"]
        if "dec" in limit and "dec" not in cols:
            cols.append("dec")
    return f"SELECT {distinct}{', '.join(cols)} FROM gaia{where}{limit}"


@pytest.mark.parametrize("config", CONFIGS)
def test_generated_queries_equal_unpartitioned_copy(
    engines: dict[str, QueryEngine], ref: object, config: str
) -> None:
    @settings(
        max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(generated_queries())
    def check(sql: str) -> None:
        expected = reference(ref, sql)  # type: ignore[arg-type]
        got = engines[config].execute(sql).table
        assert canonical_rows(got, _ordered(sql)) == canonical_rows(expected, _ordered(sql)), sql

    check()


def test_result_cap_is_reported(engines: dict[str, QueryEngine]) -> None:
    result = engines["duckdb-3"].execute("SELECT source_id FROM gaia", max_rows=100)
    assert result.table.num_rows == 100 and result.overflow
    small = engines["duckdb-3"].execute("SELECT source_id FROM gaia WHERE dec > 90", max_rows=100)
    assert small.table.num_rows == 0 and not small.overflow


def test_timeout_and_cancel(engines: dict[str, QueryEngine]) -> None:
    slow = (
        "SELECT SUM(scisql_angSep(a.ra, a.dec, b.ra, b.dec)) FROM gaia a JOIN gaia b "
        "ON scisql_angSep(a.ra, a.dec, b.ra, b.dec) < 0.0166"
    )
    for config in ("duckdb-3", "postgres-2"):
        with pytest.raises(QueryTimeout):
            engines[config].execute(slow, timeout=0.02)
        cancel = threading.Event()
        threading.Timer(0.02, cancel.set).start()
        with pytest.raises((QueryCancelled, QueryTimeout)):
            engines[config].execute(slow, cancel=cancel, timeout=30)
        assert engines[config].execute("SELECT COUNT(*) AS n FROM bands").table.column(0)[0].as_py() == 4


def test_count_star_comes_from_the_registry(engines: dict[str, QueryEngine], sample: Sample) -> None:
    engine = engines["postgres-2"]
    assert engine.execute("SELECT COUNT(*) AS n FROM obs").table.column(0).to_pylist() == [
        sample.tables["obs"].num_rows
    ]
    assert "row count" in engine.explain("SELECT COUNT(*) FROM obs")


def test_queries_fail_over_to_replicas(
    engines: dict[str, QueryEngine], deployments: dict[str, Deployment], ref: object
) -> None:
    """With shard1 of the three DuckDB shards gone, its chunks are read from their replicas."""
    sql = "SELECT floor(dec / 10) AS band, COUNT(*) AS n, AVG(phot_g_mean_mag) AS m FROM gaia GROUP BY 1"
    shard1 = deployments["duckdb-3"].data_dir / "catalog" / "shard1"
    moved = shard1.with_name("shard1-away")
    shard1.rename(moved)
    try:
        result = engines["duckdb-3"].execute(sql)
    finally:
        moved.rename(shard1)
    assert canonical_rows(result.table) == canonical_rows(_reference_cached(ref, sql))  # type: ignore[arg-type]
    # The missing files are found before dispatch (integrity check) or when the shard fails (failover).
    assert any("failover" in note or "read from shard" in note for note in result.plan), result.plan
