"""SQL written for Qserv over Rubin-shaped camelCase tables (issue 19, defects 1, 3, 4 and 6) equals the same
query on one unpartitioned DuckDB copy, on DuckDB shards, on PostgreSQL shards and on a deployment with both.

- Defect 1: unquoted mixed-case names (`objectId`, `decl_PS`) in ORDER BY, DISTINCT + ORDER BY, GROUP BY,
  aggregates, joins, WITH and the near-neighbour zone join, which PostgreSQL shards folded to lower case.
- Defect 3: Qserv's restrictor forms `qserv_areaspec_*(...) = 1` and `1 = qserv_areaspec_*(...)`, and the
  restrictors in a near-neighbour self-join, a crossmatch and a director-child join (they restrict the first
  director table of the FROM clause, as in Qserv), with chunk pruning kept.
- Defect 4: a region test used as a condition, `double % int` and `round(double, int)` answer the same on
  every backend.
- Defect 6: joins through a match table (RefObjMatch, relating RefObject and Object, stored in the chunks of
  both) answer each matched pair once; loads of match tables that could not be joined chunk by chunk are
  refused with the reason.

On the mixed deployment Object and Source live on DuckDB shards and RefObject on PostgreSQL shards: a query
joining them must be refused with a message saying why, any other query must equal the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms import migrate
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.query.engine import QueryEngine
from dms.query.errors import QueryRefused
from tests.answers_support import drop_databases, new_database
from tests.catalog_fixtures import canonical_rows
from tests.hypothesis_profiles import examples
from tests.pg_support import seed_default_shard
from tests.rubin_fixtures import RubinSample, load_rubin, make_rubin_sample, rubin_reference

CONFIGS = ("duckdb", "postgres", "mixed")
TABLES = ("Object", "Source", "RefObject")
SECOND_COPIES: dict[str, int] = {}  # match rows stored a second time, in their second object's chunk
MIXED_REFUSAL = "PostgreSQL shards with tables on DuckDB"

QUERIES = [
    # defect 1: ORDER BY / DISTINCT / GROUP BY / aggregates on camelCase columns
    "SELECT objectId FROM Object WHERE objectId = 430209694171136 ORDER BY objectId",
    'SELECT "objectId" FROM Object WHERE "decl_PS" > 3.3 ORDER BY "objectId"',
    "SELECT objectId, ra_PS FROM Object WHERE decl_PS > 2 ORDER BY decl_PS LIMIT 5",
    "SELECT objectId, ra_PS, decl_PS FROM Object ORDER BY rFlux_PS DESC, objectId LIMIT 10",
    "SELECT objectId FROM Object ORDER BY ra_PS + decl_PS, objectId LIMIT 4",
    "SELECT o.objectId, o.ra_PS FROM Object o ORDER BY o.decl_PS DESC LIMIT 3",
    'SELECT "objA"."objectId" FROM Object AS "objA" WHERE "objA".decl_PS < -61 ORDER BY "objA".objectId',
    "SELECT DISTINCT objectId FROM Source WHERE filterId = 2 ORDER BY objectId",
    "SELECT DISTINCT filterId FROM Source ORDER BY filterId",
    "SELECT DISTINCT extendedness, uNumObs FROM Object WHERE decl_PS > 2 ORDER BY uNumObs, extendedness",
    "SELECT COUNT(*) AS n, AVG(gFlux_PS) AS g, MAX(decl_PS) AS d FROM Object WHERE decl_PS BETWEEN -6 AND 0",
    "SELECT filterId, COUNT(*) AS n, MAX(psfFlux) AS m FROM Source GROUP BY filterId ORDER BY filterId",
    "SELECT scienceCcdExposureId, COUNT(*) AS n FROM Source GROUP BY scienceCcdExposureId "
    "ORDER BY n DESC, scienceCcdExposureId LIMIT 3",
    "SELECT extendedness, COUNT(*) AS n FROM Object GROUP BY extendedness HAVING COUNT(*) > 10 ORDER "
    "BY extendedness",
    "SELECT uNumObs AS nObs, AVG(rFlux_PS) AS r FROM Object GROUP BY uNumObs ORDER BY uNumObs LIMIT 5",
    "SELECT COUNT(DISTINCT objectId) AS n FROM Source WHERE filterId < 2",
    # an aggregate over the group key itself (hypothesis found PostgreSQL shards given `_g0 AS _d0`)
    "SELECT uNumObs, COUNT(DISTINCT uNumObs) AS a0 FROM Object GROUP BY uNumObs",
    "SELECT uNumObs, COUNT(DISTINCT uNumObs) AS n, SUM(uNumObs) AS s, MAX(uNumObs + 1) AS m FROM Object "
    "GROUP BY uNumObs ORDER BY uNumObs",
    "SELECT * FROM Object WHERE objectId = 430209694171150",
    # joins: director-child, child-child, near-neighbour self-join, crossmatch of two directors
    "SELECT o.objectId, s.sourceId, s.psfFlux FROM Object o JOIN Source s ON s.objectId = o.objectId "
    "WHERE o.decl_PS > 2.5 AND o.ra_PS BETWEEN 149 AND 151",
    "SELECT o.objectId, COUNT(*) AS n FROM Object o JOIN Source s USING (objectId) WHERE o.decl_PS < -60 "
    "GROUP BY o.objectId ORDER BY o.objectId LIMIT 20",
    "SELECT s.filterId, AVG(o.gFlux_PS) AS g FROM Object o LEFT JOIN Source s ON s.objectId = o.objectId "
    "AND s.taiMidPoint < 52000 WHERE o.decl_PS > 3 GROUP BY s.filterId",
    "SELECT s1.sourceId, s2.sourceId FROM Source s1 JOIN Source s2 ON s1.objectId = s2.objectId "
    "WHERE s1.sourceId < s2.sourceId AND s1.filterId = 1 AND s2.filterId = 2",
    "SELECT o1.objectId, o2.objectId FROM Object o1 JOIN Object o2 "
    "ON scisql_angSep(o1.ra_PS, o1.decl_PS, o2.ra_PS, o2.decl_PS) < 0.005 "
    "WHERE o1.objectId <> o2.objectId AND o1.decl_PS BETWEEN -6 AND -4 AND o2.decl_PS BETWEEN -7 AND -3",
    "SELECT r.refObjectId, o.objectId FROM RefObject r JOIN Object o "
    "ON scisql_angSep(r.ra, r.decl, o.ra_PS, o.decl_PS) < 0.0006 WHERE o.decl_PS > 0",
    "SELECT COUNT(*) AS n FROM RefObject r, Object o "
    "WHERE scisql_s2PtInCircle(o.ra_PS, o.decl_PS, r.ra, r.decl, 0.0006) = 1",
    # WITH, subqueries, set operations
    "WITH bright AS (SELECT objectId, rFlux_PS FROM Object WHERE rFlux_PS > 20000) "
    "SELECT COUNT(*) AS n, MAX(rFlux_PS) AS m FROM bright",
    "SELECT objectId FROM Object WHERE objectId IN "
    "(SELECT objectId FROM Source WHERE filterId = 3 AND psfFlux > 30000)",
    "SELECT m.objectId FROM (SELECT objectId, uNumObs FROM Object WHERE uNumObs > 10) m "
    "WHERE m.objectId > 430209694171136",
    "SELECT objectId FROM Object WHERE decl_PS > 3.4 UNION SELECT objectId FROM Source WHERE decl < -61.4",
    # defect 3: Qserv's restrictor forms (checked against their scisql equivalent)
    "SELECT objectId, ra_PS FROM Object WHERE qserv_areaspec_box(149, 1, 151, 3) = 1"
    " -- SELECT objectId, ra_PS FROM Object WHERE scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3) = 1",
    "SELECT objectId FROM Object WHERE 1 = qserv_areaspec_box(149, 1, 151, 3) AND uNumObs > 3"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3) = 1 AND "
    "uNumObs > 3",
    "SELECT objectId FROM Object WHERE qserv_areaspec_circle(10, -5, 0.5) = 1"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInCircle(ra_PS, decl_PS, 10, -5, 0.5) = 1",
    "SELECT objectId FROM Object WHERE qserv_areaspec_ellipse(10, -5, 1800, 900, 20) = 1"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInEllipse(ra_PS, decl_PS, 10, -5, 1800, 900, 20) = 1",
    "SELECT objectId FROM Object WHERE 1 = qserv_areaspec_poly(9, -6, 11, -6, 11, -4, 9, -4)"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInCPoly(ra_PS, decl_PS, 9, -6, 11, -6, 11, -4, "
    "9, -4) = 1",
    "SELECT o1.objectId, o2.objectId FROM Object o1, Object o2 WHERE qserv_areaspec_box(9, -6, 11, -4) "
    "AND scisql_angSep(o1.ra_PS, o1.decl_PS, o2.ra_PS, o2.decl_PS) < 0.005 AND o1.objectId <> o2.objectId"
    " -- SELECT o1.objectId, o2.objectId FROM Object o1, Object o2 "
    "WHERE scisql_s2PtInBox(o1.ra_PS, o1.decl_PS, 9, -6, 11, -4) = 1 "
    "AND scisql_angSep(o1.ra_PS, o1.decl_PS, o2.ra_PS, o2.decl_PS) < 0.005 AND o1.objectId <> o2.objectId "
    "AND o2.decl_PS BETWEEN -7 AND -3",
    "SELECT o.objectId, s.sourceId FROM Object o JOIN Source s ON s.objectId = o.objectId "
    "WHERE qserv_areaspec_box(149, 1, 151, 3) = 1"
    " -- SELECT o.objectId, s.sourceId FROM Object o JOIN Source s ON s.objectId = o.objectId "
    "WHERE scisql_s2PtInBox(o.ra_PS, o.decl_PS, 149, 1, 151, 3) = 1",
    "SELECT s.sourceId, s.psfFlux FROM Source s, Object o WHERE qserv_areaspec_circle(150, 2, 0.3) "
    "AND o.objectId = s.objectId"
    " -- SELECT s.sourceId, s.psfFlux FROM Source s, Object o "
    "WHERE scisql_s2PtInCircle(o.ra_PS, o.decl_PS, 150, 2, 0.3) = 1 AND o.objectId = s.objectId",
    "SELECT COUNT(*) AS n FROM RefObject r JOIN Object o ON scisql_angSep(r.ra, r.decl, o.ra_PS, o.decl_PS) "
    "< 0.0006 WHERE qserv_areaspec_box(0, -90, 360, 0) = 1"
    " -- SELECT COUNT(*) AS n FROM RefObject r JOIN Object o "
    "ON scisql_angSep(r.ra, r.decl, o.ra_PS, o.decl_PS) < 0.0006 "
    "WHERE scisql_s2PtInBox(r.ra, r.decl, 0, -90, 360, 0) = 1",
    # defect 4: region tests as conditions, double % int, round(double, int)
    "SELECT objectId FROM Object WHERE scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3)"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3) = 1",
    "SELECT objectId FROM Object WHERE scisql_s2PtInCircle(ra_PS, decl_PS, 10, -5, 0.3) AND uNumObs > 5"
    " -- SELECT objectId FROM Object WHERE scisql_s2PtInCircle(ra_PS, decl_PS, 10, -5, 0.3) = 1 AND "
    "uNumObs > 5",
    "SELECT objectId FROM Object WHERE NOT scisql_s2PtInCircle(ra_PS, decl_PS, 10, -5, 1.4) "
    "AND decl_PS BETWEEN -6 AND -4"
    " -- SELECT objectId FROM Object WHERE NOT scisql_s2PtInCircle(ra_PS, decl_PS, 10, -5, 1.4) = 1 "
    "AND decl_PS BETWEEN -6 AND -4",
    "SELECT objectId, ra_PS % 2 AS m, uNumObs % 3 AS k FROM Object WHERE decl_PS > 2.5",
    "SELECT COUNT(*) AS n FROM Object WHERE decl_PS % 1 > 0.5",
    "SELECT objectId, round(ra_PS, 3) AS r, round(gFlux_PS, -2) AS g FROM Object WHERE decl_PS > 2.5",
    "SELECT filterId, round(AVG(psfFlux), 2) AS a FROM Source GROUP BY filterId",
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> RubinSample:
    return make_rubin_sample(tmp_path_factory.mktemp("rubin"))


@pytest.fixture(scope="module")
def ref(sample: RubinSample) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = rubin_reference(sample)
    yield conn
    conn.close()


def _add_postgres(deployment: Deployment, uris: list[str]) -> None:
    for i, uri in enumerate(uris):
        deployment.add_shard(ShardConfig(name=f"pg{i}", kind="postgres", url=uri))


@pytest.fixture(scope="module")
def deployments(
    sample: RubinSample, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployment]]:
    created: list[str] = []
    made: dict[str, Deployment] = {}
    try:
        for config in CONFIGS:
            deployment = Deployment.create(
                tmp_path_factory.mktemp(config) / "dep",
                database_url=new_database(pg_server, created, migrated=True),
            )
            seed_default_shard(deployment, pg_server)
            if config != "duckdb":
                _add_postgres(deployment, [new_database(pg_server, created, shard=True) for _ in range(2)])
            if config == "duckdb":
                deployment.add_shard(ShardConfig(name="shard1", kind="duckdb", path="catalog/shard1.duckdb"))
            list(migrate.upgrade(deployment))
            made[config] = deployment
            if config == "mixed":
                load_rubin(deployment, sample, storage="duckdb", only=("Object", "Source"))
                load_rubin(deployment, sample, storage="postgres", only=("RefObject",), like=None)
            else:
                loads = load_rubin(deployment, sample, storage=config, only=(*TABLES, "RefObjMatch"))
                SECOND_COPIES[config] = loads["RefObjMatch"].overlap_rows
        yield made
    finally:
        for deployment in made.values():
            deployment.dispose()
        drop_databases(pg_server, created)


@pytest.fixture(scope="module")
def engines(deployments: dict[str, Deployment]) -> Iterator[dict[str, QueryEngine]]:
    made = {name: QueryEngine(d) for name, d in deployments.items()}
    yield made
    for engine in made.values():
        engine.close()


_REFERENCE: dict[str, pa.Table] = {}


def reference(conn: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    if sql not in _REFERENCE:
        cursor = conn.cursor()
        cursor.execute("SET search_path = 'cat,main'")
        cursor.execute("SET integer_division = true")  # PostgreSQL semantics, as the engine uses
        _REFERENCE[sql] = cursor.sql(
            sqlglot.transpile(sql, read="postgres", write="duckdb")[0]
        ).to_arrow_table()
    return _REFERENCE[sql]


def _ordered(sql: str) -> bool:
    return " ORDER BY " in sql and " LIMIT " in sql and "UNION" not in sql


def _joins_storage_kinds(sql: str) -> bool:
    return "RefObject" in sql and ("Object o" in sql or "Source" in sql)


def check(engine: QueryEngine, ref: duckdb.DuckDBPyConnection, config: str, query: str) -> None:
    sql, _, ref_sql = query.partition(" -- ")
    expected = reference(ref, ref_sql or sql)
    if config == "mixed" and _joins_storage_kinds(sql):
        with pytest.raises(QueryRefused, match=MIXED_REFUSAL):
            engine.execute(sql)
        return
    got = engine.execute(sql).table
    assert got.num_columns == expected.num_columns, sql
    assert canonical_rows(got, _ordered(sql)) == canonical_rows(expected, _ordered(sql)), sql


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sql", QUERIES)
def test_camelcase_query_equals_unpartitioned_copy(
    engines: dict[str, QueryEngine], ref: duckdb.DuckDBPyConnection, config: str, sql: str
) -> None:
    check(engines[config], ref, config, sql)


def test_the_queries_compare_non_empty_answers(ref: duckdb.DuckDBPyConnection) -> None:
    """Most reference answers have rows, so equal answers are not equal by being empty."""
    empty = [q for q in QUERIES if reference(ref, q.partition(" -- ")[2] or q).num_rows == 0]
    assert len(empty) <= 1, empty


@pytest.mark.parametrize("config", ["duckdb", "postgres"])
def test_restrictors_keep_chunk_pruning(engines: dict[str, QueryEngine], config: str) -> None:
    """Every form of the restrictor reads the same few chunks as its scisql equivalent, not all of them."""
    engine = engines[config]

    def chunks(sql: str) -> str:
        return next(n for n in engine.explain(sql).splitlines() if n.startswith("primary "))

    everything = chunks("SELECT objectId FROM Object")
    box = chunks("SELECT objectId FROM Object WHERE scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3) = 1")
    assert box != everything
    for form in (
        "qserv_areaspec_box(149, 1, 151, 3)",
        "qserv_areaspec_box(149, 1, 151, 3) = 1",
        "1 = qserv_areaspec_box(149, 1, 151, 3)",
        "scisql_s2PtInBox(ra_PS, decl_PS, 149, 1, 151, 3)",
    ):
        assert chunks(f"SELECT objectId FROM Object WHERE {form}") == box, form
    self_join = chunks(
        "SELECT o1.objectId FROM Object o1, Object o2 WHERE qserv_areaspec_box(149, 1, 151, 3) = 1 "
        "AND scisql_angSep(o1.ra_PS, o1.decl_PS, o2.ra_PS, o2.decl_PS) < 0.001"
    )
    assert self_join.split(":")[1].split(";")[0] == box.split(":")[1]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT objectId FROM Object WHERE qserv_areaspec_box(149, 1, 151, 3) = 0", "restrictor"),
        ("SELECT objectId FROM Object WHERE qserv_areaspec_box(149, 1, 151, 3) > 0", "restrictor"),
        ("SELECT sourceId FROM Source WHERE qserv_areaspec_circle(150, 2, 1) = 1", "director table"),
    ],
)
def test_restrictor_misuse_is_refused_with_a_reason(
    engines: dict[str, QueryEngine], sql: str, reason: str
) -> None:
    with pytest.raises(QueryRefused, match=reason):
        engines["postgres"].execute(sql)


columns = st.lists(
    st.sampled_from(["objectId", "ra_PS", "decl_PS", "gFlux_PS", "uNumObs", "extendedness", "ra_PS_Sigma"]),
    min_size=1,
    max_size=4,
    unique=True,
)
aggregates = st.lists(
    st.sampled_from(
        [
            "COUNT(*)",
            "SUM(rFlux_PS)",
            "AVG(decl_PS)",
            "MIN(ra_PS)",
            "MAX(iFlux_PS)",
            "COUNT(DISTINCT uNumObs)",
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
        ra, dec = draw(st.sampled_from([(10.0, -5.0), (150.0, 2.0), (359.5, 30.0), (220.0, -60.0)]))
        radius = draw(st.floats(0.05, 2.0))
        form = draw(
            st.sampled_from(["qserv_areaspec_circle({}) = 1", "scisql_s2PtInCircle(ra_PS, decl_PS, {})"])
        )
        parts.append(form.format(f"{ra}, {dec}, {radius:.4f}"))
    if draw(st.booleans()):
        parts.append(f"uNumObs {draw(st.sampled_from(['<', '>=', '<>']))} {draw(st.integers(0, 11))}")
    if draw(st.booleans()):
        parts.append(f"gFlux_PS > {draw(st.floats(500, 20000)):.1f}")
    return " WHERE " + " AND ".join(parts) if parts else ""


@st.composite
def generated_queries(draw: st.DrawFn) -> tuple[str, str]:
    """A Qserv-style query and its reference spelling (the restrictor as its scisql equivalent)."""
    where = draw(where_clauses())
    if draw(st.booleans()):
        group = draw(st.sampled_from(["", "extendedness", "uNumObs"]))
        select = ", ".join(f"{a} AS a{i}" for i, a in enumerate(draw(aggregates)))
        order = f" ORDER BY {group}" if group and draw(st.booleans()) else ""
        sql = f"SELECT {group + ', ' if group else ''}{select} FROM Object{where}"
        sql += f" GROUP BY {group}{order}" if group else ""
    else:
        cols = draw(columns)
        order = draw(st.sampled_from(["", "objectId", "decl_PS DESC, objectId", "uNumObs, objectId"]))
        distinct = draw(st.booleans())
        if order:
            cols += [c.split()[0] for c in order.split(", ") if c.split()[0] not in cols]
        limit = f" LIMIT {draw(st.integers(1, 30))}" if order and "objectId" in order else ""
        sql = f"SELECT {'DISTINCT ' if distinct else ''}{', '.join(cols)} FROM Object{where}"
        sql += f" ORDER BY {order}{limit}" if order else ""
    reference_sql = sql.replace("qserv_areaspec_circle(", "scisql_s2PtInCircle(ra_PS, decl_PS, ")
    return sql, reference_sql


@pytest.mark.parametrize("config", CONFIGS)
def test_generated_camelcase_queries_equal_unpartitioned_copy(
    engines: dict[str, QueryEngine], ref: duckdb.DuckDBPyConnection, config: str
) -> None:
    @settings(
        max_examples=examples(25), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(generated_queries())
    def run(query: tuple[str, str]) -> None:
        check(engines[config], ref, config, f"{query[0]} -- {query[1]}")

    run()


# Defect 6, match tables: RefObjMatch relates RefObject and Object and is stored in the chunks of both; joins
# through it run chunk by chunk, each matched pair once (no duplicates from the second copies).
MATCH_QUERIES = [
    "SELECT * FROM RefObjMatch",
    "SELECT COUNT(*) AS n, SUM(angSep) AS s FROM RefObjMatch WHERE nRefMatches > 0",
    "SELECT refObjectId, COUNT(*) AS n FROM RefObjMatch GROUP BY refObjectId HAVING COUNT(*) > 1",
    "SELECT m.objectId, m.angSep FROM RefObjMatch m WHERE m.refObjectId = 1500",
    "SELECT r.refObjectId, m.objectId, m.angSep FROM RefObject r JOIN RefObjMatch m ON m.refObjectId "
    "= r.refObjectId",
    "SELECT o.objectId, m.refObjectId FROM Object o JOIN RefObjMatch m ON m.objectId = o.objectId "
    "WHERE o.decl_PS > 0",
    "SELECT r.refObjectId, o.objectId, r.gMag, o.gFlux_PS FROM RefObject r "
    "JOIN RefObjMatch m ON m.refObjectId = r.refObjectId JOIN Object o ON o.objectId = m.objectId",
    "SELECT o.objectId, r.refObjectId FROM Object o, RefObjMatch m, RefObject r "
    "WHERE o.objectId = m.objectId AND r.refObjectId = m.refObjectId AND o.decl_PS < -50",
    "SELECT r.isStar, COUNT(*) AS n, AVG(o.rFlux_PS) AS f FROM RefObject r "
    "JOIN RefObjMatch m ON m.refObjectId = r.refObjectId JOIN Object o ON o.objectId = m.objectId "
    "GROUP BY r.isStar",
    "SELECT m.refObjectId FROM RefObjMatch m JOIN Object o ON o.objectId = m.objectId WHERE "
    "m.refObjectId = 1500",
    "SELECT r.refObjectId, o.objectId FROM RefObject r JOIN RefObjMatch m ON m.refObjectId = r.refObjectId "
    "JOIN Object o ON o.objectId = m.objectId WHERE qserv_areaspec_box(149, 1, 151, 3)"
    " -- SELECT r.refObjectId, o.objectId FROM RefObject r JOIN RefObjMatch m ON m.refObjectId = "
    "r.refObjectId "
    "JOIN Object o ON o.objectId = m.objectId WHERE scisql_s2PtInBox(r.ra, r.decl, 149, 1, 151, 3) = 1",
    "SELECT o.objectId, r.refObjectId FROM Object o JOIN RefObjMatch m ON m.objectId = o.objectId "
    "JOIN RefObject r ON r.refObjectId = m.refObjectId WHERE scisql_s2PtInCircle(o.ra_PS, o.decl_PS, "
    "10, -5, 1) = 1",
    "SELECT s.sourceId, m.refObjectId FROM Source s JOIN RefObjMatch m ON m.objectId = s.objectId "
    "WHERE s.filterId = 2",
]


@pytest.mark.parametrize("config", ["duckdb", "postgres"])
@pytest.mark.parametrize("sql", MATCH_QUERIES)
def test_joins_through_a_match_table_equal_unpartitioned_copy(
    engines: dict[str, QueryEngine], ref: duckdb.DuckDBPyConnection, config: str, sql: str
) -> None:
    check(engines[config], ref, config, sql)


def test_match_rows_are_stored_in_the_chunks_of_both_objects(deployments: dict[str, Deployment]) -> None:
    """Some pairs straddle a chunk boundary, so the answers above would count them twice if the second
    copies were read as pairs of their own."""
    assert SECOND_COPIES["duckdb"] > 0 and SECOND_COPIES["duckdb"] == SECOND_COPIES["postgres"]


def test_match_table_loads_refuse_what_cannot_be_joined_chunk_by_chunk(
    deployments: dict[str, Deployment], sample: RubinSample, tmp_path: Any
) -> None:
    from dms.loaders.catalog import LoadError, TableOptions, load_files
    from dms.loaders.samples import write_parquet

    across = TableOptions(
        role="match",
        director="RefObject",
        director_key="refObjectId",
        director2="Object",
        director_key2="objectId",
    )
    with pytest.raises(LoadError, match="--like"):  # RefObject on PostgreSQL, Object on DuckDB shards
        load_files(
            deployments["mixed"], "RefObjMatch", [sample.files["RefObjMatch"]], progress=False, create=across
        )
    objects, refs = sample.tables["Object"], sample.tables["RefObject"]
    far = pa.table(
        {
            "refObjectId": refs["refObjectId"].slice(0, 1),
            "objectId": objects["objectId"].take([int(objects["decl_PS"].to_numpy().argmax())]),
            "angSep": [1.0],
            "nRefMatches": pa.array([1], pa.int32()),
        }
    )
    path = write_parquet(far, tmp_path / "far.parquet")
    with pytest.raises(LoadError, match="farther apart than the directors' overlap"):
        load_files(deployments["postgres"], "FarMatch", [path], progress=False, create=across)
    missing = far.set_column(1, "objectId", pa.array([12345], pa.int64()))
    with pytest.raises(LoadError, match=r"not in cat\.Object"):
        load_files(
            deployments["duckdb"],
            "GoneMatch",
            [write_parquet(missing, tmp_path / "gone.parquet")],
            progress=False,
            create=across,
        )
