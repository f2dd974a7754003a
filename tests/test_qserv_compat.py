"""SQL written for Qserv runs on DMS with Qserv's answers (issue 19).

The queries of tests/data/qserv_queries.yaml (Qserv-style, over PT1.2-shaped tables) run with
`--lang qserv` on DuckDB shards and on PostgreSQL shards, and each either equals MariaDB's answer over the same
unpartitioned rows (MariaDB is MySQL, Qserv's front end: Qserv's own integration tests compare the same way)
or is refused with a message that says why. Internal messages never reach the user.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.qserv_data import QservTables, make_qserv_tables

QUERIES = yaml.safe_load((Path(__file__).parent / "data" / "qserv_queries.yaml").read_text())
INTERNAL = re.compile(r"Chained comparisons|Unexpected token|Binder Error|Invalid expression|_col_\d|Traceback")


def _params() -> list[Any]:
    params = []
    for backend in ("duckdb", "postgres"):
        for query in QUERIES:
            marks = []
            if query.get("needs") == "qsa" or (backend == "postgres" and query.get("needs_pg") == "qsa"):
                marks.append(pytest.mark.xfail(reason="needs qsa's half of issue 19", strict=False))
            params.append(pytest.param(backend, query, id=f"{backend}-{query['id']}", marks=marks))
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
        duck = Deployment.create(tmp_path_factory.mktemp("qd") / "dep", database_url=new_database(pg_server, created))
        migrate.upgrade(duck)
        deployments["duckdb"] = duck
        _load(duck, qserv_tables, "duckdb")
        pg = Deployment.create(tmp_path_factory.mktemp("qp") / "dep", database_url=new_database(pg_server, created))
        deployments["postgres"] = pg
        add_postgres_shards(pg, [new_database(pg_server, created) for _ in range(2)])
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


def _rows(rows: list[tuple[Any, ...]], ordered: bool) -> list[tuple[Any, ...]]:
    canonical = [tuple(_canonical(v) for v in row) for row in rows]
    return canonical if ordered else sorted(canonical, key=repr)


@pytest.mark.parametrize(("backend", "query"), _params())
def test_qserv_query_matches_mariadb(engines: dict[str, QueryEngine], mariadb: Any, backend: str, query: dict[str, Any]) -> None:
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
    names, expected = mariadb_rows(mariadb, sql)
    table = result.table
    if query.get("columns_only"):  # SHOW COLUMNS / DESCRIBE: the same columns, in the same order
        assert table.column("Field").to_pylist() == [row[0] for row in expected]
        assert table.column_names == names
        return
    got = list(zip(*(c.to_pylist() for c in table.columns), strict=True)) if table.num_columns else []
    assert table.num_columns == len(names)
    if query.get("names"):
        assert table.column_names == names
    assert _rows(got, query.get("ordered", False)) == _rows(expected, query.get("ordered", False))
