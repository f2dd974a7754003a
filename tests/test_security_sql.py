"""Hostile SQL over real HTTP (issue 11, items 1, 3, 5, 13, 14, 15): names that try to break out of their
quotes, tables outside the allow-list, queries nested to exhaust the stack, and the role user queries run as.

The deployment has a control database and a PostgreSQL shard (databases of the session's PostgreSQL) and a
DuckDB shard; `gaia` is on the DuckDB shard and `pgaia` (the same rows) on the PostgreSQL shard, so the
injections are tried on every place a shipped table is created: the control database, the PostgreSQL shard
and DuckDB.
"""

from __future__ import annotations

import ast
import csv
import http.client
import io
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dms import migrate
from dms.cli import main
from dms.config import ShardConfig
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.query.engine import QueryEngine
from dms.query.limits import MAX_DEPTH, MAX_NESTING
from dms.services.vo.server import running_server
from dms.services.vo.tap_schema import sync
from dms.shards.parquet.backend import DuckDBShard
from dms.shards.postgres.transfer import PostgresConnection
from tests.pg_support import (
    control_database,
    drop_database,
    seed_default_shard,
    shard_database,
)

REPO = Path(__file__).resolve().parent.parent
BREAKOUT = 'a"" integer); {sql}; CREATE TEMP TABLE ""zz"" (""b'
"""A quoted name that closes its own quotes when pasted into CREATE TEMP TABLE unescaped."""


@dataclass
class Live:
    url: str
    deployment: Deployment
    control_url: str
    shard_url: str
    gaia: pa.Table
    marker: Path


@pytest.fixture(scope="module")
def live(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    name = control_database(pg_server, "sec")
    shard = shard_database(pg_server, "sec_s")
    directory = tmp_path_factory.mktemp("sec")
    deployment = Deployment.create(directory / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 100)))
    try:
        deployment.add_shard(ShardConfig(name="pg0", kind="postgres", url=pg_server.get_uri(shard)))
        migrate.upgrade(deployment)
        path = write_parquet(gaia, directory / "gaia.parquet")
        for table, storage in (("gaia", "duckdb"), ("pgaia", "postgres")):
            options = TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2, storage=storage)
            load_files(deployment, table, [path], progress=False, create=options)
        with deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    'INSERT INTO ivoa."ObsCore" (obs_publisher_did, obs_id, dataproduct_type, calib_level, '
                    "obs_collection, access_url) VALUES ('ivo://dms.example/x?1', 'img1', 'image', 2, "
                    "'test', 'http://files.example/img1.fits')"
                )
            )
            sync(conn)  # publish TAP_SCHEMA and ObsCore
        with running_server(deployment) as url:
            # /tmp: the database server may run as another user than the tests
            marker = Path(tempfile.gettempdir()) / f"{name}_program_ran"
            yield Live(url, deployment, pg_server.get_uri(name), pg_server.get_uri(shard), gaia, marker)
    finally:
        (Path(tempfile.gettempdir()) / f"{name}_program_ran").unlink(missing_ok=True)
        deployment.dispose()
        drop_database(pg_server, name, shard)


def _tap(live: Live, query: str, lang: str = "PostgreSQL", **extra: Any) -> httpx.Response:
    return httpx.post(f"{live.url}/tap/sync", data={"LANG": lang, "QUERY": query, **extra}, timeout=120)


def _exists(url: str, table: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() != (None,)


def _untouched(live: Live, table: str) -> None:
    """Neither database has the table the injection tried to create, and no program ran."""
    assert not _exists(live.control_url, table)
    assert not _exists(live.shard_url, table)
    assert not live.marker.exists()


def _payloads(live: Live, tag: str) -> list[str]:
    return [  # the program first: it runs even if the transaction is rolled back afterwards
        BREAKOUT.format(sql=f"COPY (SELECT 1) TO PROGRAM 'touch {live.marker}'"),
        BREAKOUT.format(sql=f"CREATE TABLE public.{tag}_t (x integer)"),
    ]


# --- item 1: names that try to leave their quotes ---------------------------------------------------------

# Each target ships the WITH query's result to a different database: the control database (a TAP_SCHEMA
# table), the PostgreSQL shard (pgaia) and DuckDB (gaia).
TARGETS = {
    "control": "tap_schema.schemas AS t",
    "postgres-shard": "pgaia AS t",
    "duckdb-shard": "gaia AS t",
}
WHERE = {
    "control": "",
    "postgres-shard": " WHERE t.source_id = c.x",
    "duckdb-shard": " WHERE t.source_id = c.x",
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cte_column_alias_cannot_inject(live: Live, target: str) -> None:
    for payload in _payloads(live, "alias"):
        query = (
            f'WITH c AS (SELECT source_id AS x, ra AS "{payload}" FROM gaia ORDER BY source_id LIMIT 3) '
            f"SELECT c.* FROM {TARGETS[target]}, c{WHERE[target]}"
        )
        response = _tap(live, query, FORMAT="csv")
        _untouched(live, "public.alias_t")
        assert response.status_code == 200, response.text
        # the name is a name: it comes back as the result's column name (the binder folds it to lower case)
        header = next(csv.reader(io.StringIO(response.text)))
        name = payload.replace('""', '"').lower()
        # PostgreSQL keeps the first 63 bytes of a name
        assert header[0] == "x" and len(header) == 2 and name.startswith(header[1]) and len(header[1]) >= 63
        _untouched(live, "public.alias_t")


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_cte_column_list_and_cte_name_cannot_inject(live: Live, target: str) -> None:
    for payload in _payloads(live, "names"):
        queries = [
            f'WITH c(x, "{payload}") AS (SELECT source_id, ra FROM gaia ORDER BY source_id LIMIT 3) '
            f"SELECT c.* FROM {TARGETS[target]}, c{WHERE[target]}",
            f'WITH "{payload}" AS (SELECT source_id AS x FROM gaia ORDER BY source_id LIMIT 3) '
            f'SELECT c.x FROM {TARGETS[target]}, "{payload}" AS c{WHERE[target]}',
        ]
        for query in queries:
            response = _tap(live, query)
            _untouched(live, "public.names_t")
            assert response.status_code == 200, response.text


def _votable(field: str) -> bytes:
    escaped = field.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return (
        b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        b'<RESOURCE><TABLE><FIELD name="sid" datatype="long"/><FIELD name="'
        + escaped.encode()
        + b'" datatype="int"/><DATA><TABLEDATA><TR><TD>-66657</TD><TD>1</TD></TR>'
        b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>"
    )


UPLOAD_QUERIES = {
    # names a catalog table, so the engine runs it; the upload is shipped to the control database
    "control": "SELECT u.* FROM TAP_UPLOAD.up AS u, tap_schema.schemas AS s "
    "WHERE u.sid IN (SELECT source_id FROM gaia)",
    "postgres-shard": "SELECT u.*, g.ra FROM TAP_UPLOAD.up AS u JOIN pgaia AS g ON g.source_id = u.sid",
    "duckdb-shard": "SELECT u.*, g.ra FROM TAP_UPLOAD.up AS u JOIN gaia AS g ON g.source_id = u.sid",
}


@pytest.mark.parametrize("target", sorted(UPLOAD_QUERIES))
def test_uploaded_field_names_cannot_inject(live: Live, target: str) -> None:
    for payload in _payloads(live, "upload"):
        field = payload.replace('""', '"')
        response = httpx.post(
            f"{live.url}/tap/sync",
            data={"LANG": "ADQL", "QUERY": UPLOAD_QUERIES[target], "UPLOAD": "up,param:f"},
            files={"f": ("t.xml", _votable(field))},
            timeout=120,
        )
        _untouched(live, "public.upload_t")
        assert response.status_code in (200, 400), response.text
        assert "internal error" not in response.text


def test_user_queries_run_as_the_reader_in_read_only_transactions(live: Live) -> None:
    """The control path (the engine's and the VO executor's) and a PostgreSQL shard."""
    probe = (
        "SELECT current_user AS who, session_user AS login, current_setting('transaction_read_only') AS ro, "
        "current_setting('work_mem') AS mem"
    )
    shipped = {f"{BREAKOUT.format(sql='SELECT 1')}": pa.table({BREAKOUT.format(sql="SELECT 2"): [1]})}
    with PostgresConnection(live.control_url) as conn:
        row = conn.query(probe, timeout=10, cancel=None, tables=shipped).to_pylist()[0]
    assert row["who"] == "dms_reader" and row["ro"] == "on" and row["mem"] == "64MB"
    store = next(s for s in live.deployment.shards() if s.kind == "postgres")
    try:
        row = store.execute(probe, timeout=10, cancel=None, tables=shipped).to_pylist()[0]
        assert row["who"] == "dms_reader" and row["ro"] == "on"
        for statement in ("CREATE TABLE public.shard_t (x integer)", "SELECT * FROM dms.schema_info"):
            with pytest.raises(Exception, match=r"read-only|permission denied"):
                store.execute(statement, timeout=10, cancel=None)
        # the temporary tables are gone: the pooled connection is clean for the next query
        row = store.execute(
            "SELECT count(*) AS n FROM pg_class WHERE relpersistence = 't'", timeout=10, cancel=None
        ).to_pylist()[0]
        assert row["n"] == 0
    finally:
        store.close()
    assert not _exists(live.shard_url, "public.shard_t")


def test_duckdb_connections_read_no_files_and_load_no_extensions(live: Live) -> None:
    engine = QueryEngine(live.deployment)
    store = next(s for s in live.deployment.shards() if s.kind == "duckdb")
    assert isinstance(store, DuckDBShard)
    try:
        for cursor in (engine._merge_cursor("SELECT 1"), store.connection()):
            for statement in (
                "SELECT * FROM read_csv('/etc/hostname')",
                "INSTALL httpfs",
                "LOAD httpfs",
                "SET enable_external_access = true",
                "COPY (SELECT 1) TO '/tmp/dms_security_copy.csv'",
            ):
                with pytest.raises(Exception, match=r"Permission|disabled|locked|configuration"):
                    cursor.execute(statement)
            assert cursor.execute("SELECT 7 / 2").fetchone() == (3,)  # PostgreSQL's integer division
        assert not Path("/tmp/dms_security_copy.csv").exists()
        # the shard still reads its own Parquet files
        assert engine.execute("SELECT COUNT(*) AS n FROM gaia WHERE ra < 90").table["n"][0].as_py() > 0
    finally:
        engine.close()
        store.close()


# --- item 3: the table allow-list, scope by scope ---------------------------------------------------------


@pytest.mark.parametrize("lang", ["ADQL", "PostgreSQL"])
@pytest.mark.parametrize(
    "query",
    [
        "SELECT x.a, t.* FROM (WITH pg_tables AS (SELECT 1 AS a) SELECT a FROM pg_tables) AS x, "
        "pg_tables AS t",
        "SELECT t.* FROM (WITH pg_roles AS (SELECT 1 AS a) SELECT a FROM pg_roles) AS x, pg_roles AS t",
        "WITH a AS (SELECT * FROM pg_settings) SELECT * FROM a",
        "WITH b AS (SELECT * FROM pg_proc), pg_proc AS (SELECT 1 AS a) SELECT * FROM b",
        "SELECT * FROM tap_schema.schemas WHERE schema_name IN (WITH s AS (SELECT 1 AS a) SELECT rolname "
        "FROM pg_roles)",
        "SELECT * FROM pg_roles",
        "SELECT * FROM pg_settings",
        "SELECT * FROM pg_proc",
    ],
)
def test_tables_outside_the_allow_list_are_refused(live: Live, lang: str, query: str) -> None:
    response = _tap(live, query, lang)
    assert response.status_code == 400, response.text
    # WITH inside a subquery and SELECT without FROM are not ADQL 2.1: the grammar refuses them first
    strict = lang == "ADQL" and "syntax error: ADQL line 1, column" in response.text
    assert 'value="ERROR"' in response.text and ("pg_" in response.text or strict)


def test_with_queries_still_resolve_in_their_scope(live: Live) -> None:
    query = (
        "WITH s AS (SELECT schema_name FROM tap_schema.schemas) "
        "SELECT COUNT(*) AS n FROM (WITH t AS (SELECT * FROM s) SELECT * FROM t) AS x"
    )
    # WITH inside a subquery is not ADQL 2.1 (the grammar refuses it); PostgreSQL SQL has it
    refused = _tap(live, query, "ADQL", FORMAT="csv")
    assert refused.status_code == 400 and "WITH may only begin the whole query" in refused.text
    response = _tap(live, query, "PostgreSQL", FORMAT="csv")
    assert response.status_code == 200, response.text
    with psycopg.connect(live.control_url) as conn:
        expected = conn.execute("SELECT count(*) FROM tap_schema.schemas").fetchone()
    assert expected is not None and response.text.split()[-1] == str(expected[0])


def test_recursive_with_is_refused_on_every_path(live: Live) -> None:
    for query in (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r, gaia",
    ):
        response = _tap(live, query)
        assert response.status_code == 400 and "RECURSIVE" in response.text, response.text


# --- item 13: nesting limits, and the keep-alive connection survives them -----------------------------------


def _deep_queries() -> dict[str, str]:
    ors = " OR ".join(f"source_id = {i}" for i in range(1000))
    total = " + ".join("ra" for _ in range(1000))
    nested_in = "SELECT source_id FROM gaia WHERE source_id IN (" * 200 + "1" + ")" * 200
    return {
        "parentheses": "SELECT " + "(" * 50 + "ra" + ")" * 50 + " FROM gaia",
        "abs": "SELECT " + "ABS(" * 50 + "ra" + ")" * 50 + " FROM gaia",
        "or-chain": f"SELECT source_id FROM gaia WHERE {ors}",
        "or-chain-control": "SELECT * FROM tap_schema.schemas WHERE "
        + " OR ".join(f"schema_name = 's{i}'" for i in range(1000)),
        "nested-in": nested_in,
        "sum": f"SELECT {total} AS s FROM gaia",
    }


@pytest.mark.parametrize("lang", ["ADQL", "PostgreSQL"])
def test_deep_queries_get_a_400_naming_the_limit_on_a_kept_alive_connection(live: Live, lang: str) -> None:
    parts = urlsplit(live.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    try:
        for kind, query in _deep_queries().items():
            body = urlencode({"LANG": lang, "QUERY": query})
            conn.request("POST", "/tap/sync", body, {"Content-Type": "application/x-www-form-urlencoded"})
            sock = conn.sock
            response = conn.getresponse()
            text = response.read().decode()
            assert response.status == 400, (kind, text)
            assert "the limit is" in text and (str(MAX_NESTING) in text or str(MAX_DEPTH) in text), (
                kind,
                text,
            )
            assert response.getheader("connection", "").lower() != "close", kind
            body = urlencode({"LANG": lang, "QUERY": "SELECT COUNT(*) AS n FROM gaia", "FORMAT": "csv"})
            conn.request("POST", "/tap/sync", body, {"Content-Type": "application/x-www-form-urlencoded"})
            assert conn.sock is sock, f"{kind}: the server closed the keep-alive connection"
            response = conn.getresponse()
            assert response.status == 200 and response.read().decode().split()[-1] == str(live.gaia.num_rows)
    finally:
        conn.close()


def test_long_or_chains_within_the_limit_are_answered(live: Live) -> None:
    ids = live.gaia["source_id"].to_pylist()[:200]
    query = "SELECT COUNT(*) AS n FROM gaia WHERE " + " OR ".join(f"source_id = {i}" for i in ids)
    response = _tap(live, query, FORMAT="csv")
    assert response.status_code == 200 and response.text.split()[-1] == "200", response.text


# --- items 14 and 15: the engine's paths and `dms query`'s errors -------------------------------------------


def test_engine_reads_obscore_by_its_exact_name(live: Live) -> None:
    with QueryEngine(live.deployment) as engine:
        result = engine.execute("SELECT obs_id FROM ivoa.ObsCore")
        assert result.table["obs_id"].to_pylist() == ["img1"]
    cli = CliRunner().invoke(
        main, ["--data-dir", str(live.deployment.data_dir), "query", "SELECT obs_id FROM ivoa.ObsCore"]
    )
    assert cli.exit_code == 0 and "img1" in cli.output, cli.output


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "SELECT x.a, t.* FROM (WITH pg_tables AS (SELECT 1 AS a) SELECT a FROM pg_tables) AS x, "
            "pg_tables AS t",
            "'pg_tables' is not a table that can be queried",
        ),
        ("SELECT * FROM _local.x", "_local.x is not a table that can be queried"),
        ("INSTALL httpfs", "only SELECT queries are allowed; this statement begins with INSTALL"),
        ("SELECT " + "ABS(" * 60 + "ra" + ")" * 60 + " FROM gaia", f"the limit is {MAX_NESTING}"),
        ("WITH c(a) AS (SELECT 1 AS z, 2 AS y) SELECT a FROM c", "names 1 columns"),
    ],
)
def test_dms_query_reports_errors_without_python_exceptions(live: Live, query: str, message: str) -> None:
    cli = CliRunner().invoke(main, ["--data-dir", str(live.deployment.data_dir), "query", query])
    assert cli.exit_code == 1, cli.output
    assert message in cli.output and "Traceback" not in cli.output, cli.output


def test_dms_query_keeps_repeated_column_names_and_with_scopes(live: Live) -> None:
    query = (
        "WITH c AS (SELECT source_id FROM gaia ORDER BY source_id LIMIT 2) "
        "SELECT * FROM (WITH c AS (SELECT 1 AS z) SELECT * FROM c) AS y, c"
    )
    cli = CliRunner().invoke(main, ["--data-dir", str(live.deployment.data_dir), "query", query])
    assert cli.exit_code == 0, cli.output
    first_two = sorted(live.gaia["source_id"].to_pylist())[:2]
    lines = cli.output.splitlines()
    assert lines[0].split() == ["z", "source_id"] and [line.split() for line in lines[1:3]] == [
        ["1", str(first_two[0])],
        ["1", str(first_two[1])],
    ]


# --- the rule that keeps it so: identifiers reach SQL only through sqlcompose ------------------------------

SQL_CALLS = {"execute", "executemany", "copy", "SQL", "text", "statement", "exec_driver_sql"}
CHECKED = ["query", "loaders", "services/vo/executor.py"]


def _built_at_run_time(node: ast.expr) -> str | None:
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return "% or + on strings"
    call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    if call and node.func.attr == "format" and isinstance(node.func.value, ast.Constant):  # type: ignore[attr-defined]
        return "str.format"
    return None


def test_no_sql_text_is_built_with_string_formatting() -> None:
    found = []
    for entry in CHECKED:
        root = REPO / entry
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                why = _built_at_run_time(node.args[0]) if name in SQL_CALLS else None
                if why:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}() of {why}")
    assert not found, "SQL built from strings (use dms.query.sqlcompose):\n" + "\n".join(found)


def test_concurrent_queries_with_shipped_tables_do_not_see_each_other(live: Live) -> None:
    """Pooled PostgreSQL shard connections drop their temporary tables after each query."""
    errors: list[str] = []

    def one(i: int) -> None:
        query = (
            f"WITH c AS (SELECT source_id AS x, {i} AS k FROM gaia ORDER BY source_id LIMIT 5) "
            "SELECT COUNT(*) AS n, MIN(c.k) AS k FROM pgaia AS t, c WHERE t.source_id = c.x"
        )
        response = _tap(live, query, FORMAT="csv")
        if response.status_code != 200 or response.text.split()[-1] != f"5,{i}":
            errors.append(response.text)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
