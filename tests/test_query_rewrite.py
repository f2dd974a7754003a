"""The aggregate split of `dms.query.rewrite.decompose`: the per-shard partials of two halves of a table,
computed by PostgreSQL (a shard's SELECT may not name its own output columns there, as DuckDB's may), then
the merge over them in DuckDB, must equal the query on the whole table."""

from __future__ import annotations

import duckdb
import psycopg
import pyarrow as pa
import pytest
import sqlglot

from dms.query.rewrite import PARTIALS, decompose

QUERIES = [
    # an aggregate over the group key itself: the shard's SELECT once named its own output (`_g0 AS _d0`)
    'SELECT "o"."u", COUNT(DISTINCT "o"."u") AS a0 FROM t AS "o" GROUP BY "o"."u"',
    'SELECT "o"."u", SUM("o"."u") AS s, MAX("o"."u" + 1) AS m FROM t AS "o" GROUP BY "o"."u"',
    'SELECT "o"."u", AVG("o"."u") AS a, COUNT(DISTINCT "o"."v") AS n FROM t AS "o" GROUP BY "o"."u"',
    'SELECT "o"."u" % 3 AS k, STDDEV("o"."u" % 3) AS s FROM t AS "o" GROUP BY "o"."u" % 3',
]
HALVES = [
    "CREATE TEMP TABLE t AS SELECT i % 7 AS u, i % 5 AS v FROM generate_series(0, 499) AS i",
    "CREATE TEMP TABLE t AS SELECT i % 7 AS u, i % 5 AS v FROM generate_series(500, 999) AS i",
]


def _rounded(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return sorted(tuple(round(float(v), 9) if v is not None else v for v in row) for row in rows)


@pytest.mark.parametrize("query", QUERIES)
def test_partials_merged_equal_the_whole_table(pg_conn: psycopg.Connection, query: str) -> None:
    split = decompose(sqlglot.parse_one(query, read="postgres"), None)
    partials = []
    for half in HALVES:  # two shards' rows
        pg_conn.execute("DROP TABLE IF EXISTS t")
        pg_conn.execute(half)
        cursor = pg_conn.execute(split.shard.sql("postgres"))
        names = [c.name for c in cursor.description or []]
        rows = cursor.fetchall()
        partials.append(
            pa.table(
                {n: [float(r[i]) if r[i] is not None else None for r in rows] for i, n in enumerate(names)}
            )
        )
    db = duckdb.connect()
    db.register(PARTIALS, pa.concat_tables(partials))
    got = db.execute(split.merge.sql("duckdb")).fetchall()
    db.execute("CREATE TABLE t AS SELECT i % 7 AS u, i % 5 AS v FROM range(0, 1000) AS r(i)")
    assert _rounded(got) == _rounded(db.execute(query).fetchall())
