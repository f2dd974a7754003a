"""SQL written for Qserv runs on DMS with Qserv's answers (issue 19).

The queries of tests/data/qserv_queries.yaml (Qserv-style, over PT1.2-shaped tables) run with
`--lang qserv` on DuckDB shards and on PostgreSQL shards, and each either equals MariaDB's answer over the
same unpartitioned rows (MariaDB is MySQL, Qserv's front end: Qserv's own integration tests compare the
same way) or is refused with a message that says why. Internal messages never reach the user.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import load_files
from dms.query.engine import QueryEngine
from dms.query.errors import QueryError, QueryRefused
from dms.query.mysql_semantics import mysql_semantics  # noqa: F401 - the module under test
from tests.answers_support import drop_databases, new_database
from tests.catalog_fixtures import add_postgres_shards
from tests.mariadb_support import load_database, mariadb_rows, mariadb_server
from tests.pg_support import seed_default_shard
from tests.qserv_data import QservTables, make_qserv_tables

QUERIES = yaml.safe_load((Path(__file__).parent / "data" / "qserv_queries.yaml").read_text())
INTERNAL = re.compile(
    r"Chained comparisons|Unexpected token|Binder Error|Invalid expression|_col_\d|Traceback"
)


def _params() -> list[Any]:
    params = []
    for backend in ("duckdb", "postgres"):
        for query in QUERIES:
            params.append(pytest.param(backend, query, id=f"{backend}-{query['id']}"))
    return params


@pytest.fixture(scope="module")
def qserv_tables(tmp_path_factory: pytest.TempPathFactory) -> QservTables:
    return make_qserv_tables(tmp_path_factory.mktemp("qserv"))


@pytest.fixture(scope="module")
def mariadb(qserv_tables: QservTables) -> Iterator[Any]:
    with mariadb_server() as server, load_database(server, qserv_tables.tables, qserv_tables.virtual) as conn:
        yield conn


def _load(deployment: Deployment, data: QservTables, storage: str) -> None:
    for name in data.order:
        options = data.options[name]
        if options.role != "child":
            options = dataclasses.replace(options, storage=storage)
        load_files(deployment, name, [data.files[name]], progress=False, create=options)


@pytest.fixture(scope="module")
def engines(
    qserv_tables: QservTables, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, QueryEngine]]:
    created: list[str] = []
    deployments: dict[str, Deployment] = {}
    made: dict[str, QueryEngine] = {}
    try:
        duck = Deployment.create(
            tmp_path_factory.mktemp("qd") / "dep",
            database_url=new_database(pg_server, created, migrated=True),
        )
        seed_default_shard(duck, pg_server)
        migrate.upgrade(duck)
        deployments["duckdb"] = duck
        _load(duck, qserv_tables, "duckdb")
        pg = Deployment.create(
            tmp_path_factory.mktemp("qp") / "dep",
            database_url=new_database(pg_server, created, migrated=True),
        )
        seed_default_shard(pg, pg_server)
        deployments["postgres"] = pg
        add_postgres_shards(pg, [new_database(pg_server, created, shard=True) for _ in range(2)])
        _load(pg, qserv_tables, "postgres")
        made = {name: QueryEngine(d) for name, d in deployments.items()}
        yield made
    finally:
        for engine in made.values():
            engine.close()
        for deployment in deployments.values():
            deployment.dispose()
        drop_databases(pg_server, created)


def _canonical(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else float(f"{value:.9g}")
    if isinstance(value, int):
        return float(value) if abs(value) < 2**53 else value
    return value


def _rows(rows: list[tuple[Any, ...]], ordered: bool, casefold: bool = False) -> list[tuple[Any, ...]]:
    canonical = [
        tuple(_canonical(v.lower() if casefold and isinstance(v, str) else v) for v in row) for row in rows
    ]
    return canonical if ordered else sorted(canonical, key=repr)


@pytest.mark.parametrize(("backend", "query"), _params())
def test_qserv_query_matches_mariadb(
    engines: dict[str, QueryEngine], mariadb: Any, backend: str, query: dict[str, Any]
) -> None:
    sql = query["sql"]
    if "refused" in query:
        with pytest.raises(QueryRefused) as refused:
            engines[backend].execute(sql, lang="qserv")
        assert re.search(query["refused"], str(refused.value)), str(refused.value)
        assert not INTERNAL.search(str(refused.value))
        return
    try:
        result = engines[backend].execute(sql, lang="qserv")
    except QueryError as exc:
        assert not INTERNAL.search(str(exc)), f"an internal message reached the user: {exc}"
        raise
    names, expected = mariadb_rows(mariadb, query.get("mariadb", sql))
    table = result.table
    if query.get("columns_only"):  # SHOW COLUMNS / DESCRIBE: the same columns, in the same order
        assert table.column("Field").to_pylist() == [row[0] for row in expected]
        assert table.column_names == names
        return
    got = list(zip(*(c.to_pylist() for c in table.columns), strict=False)) if table.num_columns else []
    assert table.num_columns == len(names)
    if query.get("names"):
        assert table.column_names == names
    ordered, casefold = query.get("ordered", False), query.get("casefold", False)
    assert _rows(got, ordered, casefold) == _rows(expected, ordered, casefold)


# ---- defect 2: DIV, duplicate column names, unnamed columns ----------------------------------------------


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_div_is_integer_division_in_postgresql_sql_too(
    engines: dict[str, QueryEngine], qserv_tables: QservTables, backend: str
) -> None:
    """DIV(x, y) is the quotient truncated toward zero on both shard kinds (it was x / y on DuckDB)."""
    result = engines[backend].execute(
        "SELECT filterId, DIV(photClam, 100) AS h, DIV(7.5, 2) AS d, DIV(-7.5, 2) AS n FROM cat.Filter"
    )
    filters = qserv_tables.tables["Filter"]
    expected = {
        (i, int(np.trunc(c / 100)), 3, -3)
        for i, c in zip(filters["filterId"].to_pylist(), filters["photClam"].to_pylist(), strict=True)
    }
    assert set(zip(*(result.table.column(c).to_pylist() for c in range(4)), strict=False)) == expected
    # exact on 15-digit ids (no detour through DECIMAL(18,3) or double)
    ids = engines[backend].execute(
        "SELECT objectId, DIV(objectId, 1) AS q FROM cat.Object WHERE decl_PS > 4.9"
    )
    assert ids.table.num_rows > 0
    assert ids.table.column(0).to_pylist() == ids.table.column(1).to_pylist()


def test_unnamed_columns_are_named_by_their_text(engines: dict[str, QueryEngine], mariadb: Any) -> None:
    sql = "SELECT COUNT(*), AVG(ra_PS), MAX(decl_PS) - MIN(decl_PS) FROM Object WHERE decl_PS > 4"
    names, _ = mariadb_rows(mariadb, sql)
    assert engines["duckdb"].execute(sql, lang="qserv").table.column_names == names
    # the same names in PostgreSQL SQL (not sqlglot's _col_0)
    assert engines["postgres"].execute(sql.replace("Object", "cat.Object")).table.column_names == names


def _cli(deployment: Deployment, *args: str) -> Any:
    from click.testing import CliRunner

    from dms.cli import main

    return CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), "query", *args])


SAME_NAMES = (
    "SELECT o.objectId, s.objectId, s.sourceId FROM Object o JOIN Source s ON o.objectId = s.objectId "
    "WHERE o.objectId = 386937900847875 ORDER BY s.sourceId"
)


def test_dms_query_keeps_two_columns_of_one_name(
    engines: dict[str, QueryEngine], mariadb: Any, tmp_path: Path
) -> None:
    from astropy.io.votable import parse_single_table

    deployment = engines["duckdb"].deployment
    names, expected = mariadb_rows(mariadb, SAME_NAMES)
    assert len(expected) > 1 and names == ["objectId", "objectId", "sourceId"]
    done = _cli(deployment, SAME_NAMES, "--lang", "qserv", "--format", "json")
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert body["columns"] == names
    assert [tuple(r) for r in body["rows"]] == expected
    text = _cli(deployment, SAME_NAMES, "--lang", "qserv")
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[0].split() == names
    assert f"({len(expected)} rows)" in text.output
    out = tmp_path / "r.xml"
    done = _cli(deployment, SAME_NAMES, "--lang", "qserv", "--format", "votable", "--output", str(out))
    assert done.exit_code == 0, done.output
    votable = parse_single_table(str(out))
    fields = [f.name for f in votable.fields]
    assert len(fields) == 3 and len(set(fields)) == 3 and fields[0] == "objectId"
    assert [tuple(int(v) for v in row) for row in votable.array.tolist()] == expected


def test_tap_lang_qserv(engines: dict[str, QueryEngine], mariadb: Any) -> None:
    import httpx

    from dms.services.vo.server import running_server

    sql = "SELECT filterId, filterName FROM Filter WHERE filterName LIKE 'Y' && filterId ^ 1 > 0"
    _, expected = mariadb_rows(mariadb, sql)
    with running_server(engines["duckdb"].deployment) as url:
        for lang in ("QSERV", "MYSQL"):
            response = httpx.post(
                f"{url}/tap/sync",
                data={"REQUEST": "doQuery", "LANG": lang, "QUERY": sql, "FORMAT": "csv"},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            rows = list(csv.reader(io.StringIO(response.text)))
            assert rows[0] == ["filterId", "filterName"]
            assert sorted((int(a), b) for a, b in rows[1:]) == sorted(expected)
        same = httpx.post(
            f"{url}/tap/sync",
            data={"REQUEST": "doQuery", "LANG": "QSERV", "QUERY": SAME_NAMES, "FORMAT": "votable"},
            timeout=60,
        )
        assert same.status_code == 200, same.text
        assert same.text.count("<FIELD") == 3


# ---- defect 5: clear errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT objectId FROM Object WHERE", "not valid MySQL/Qserv SQL"),
        ("SELECT objectId FROM Object WHERE decl_PS >> ", "not valid MySQL/Qserv SQL"),
        ("SELECT objectId FROM Object WHERE ra_PS LIKE '1%'", "LIKE on a floating-point value"),
        ("SELECT objectId FROM Object WHERE iauId", "used as a condition"),
        ("SHOW COLUMNS FROM NoSuchTable", "is not a catalog table"),
        ("SELECT filterId + filterName FROM Filter", "arithmetic on text"),
        ("SELECT objectId FROM Object WHERE objectId = 1 LIMIT x", "is not known"),
    ],
)
def test_qserv_errors_say_what_is_wrong(engines: dict[str, QueryEngine], sql: str, message: str) -> None:
    with pytest.raises(QueryError) as error:
        engines["duckdb"].execute(sql, lang="qserv")
    assert message in str(error.value)
    assert not INTERNAL.search(str(error.value))
