"""A shard query in one round trip (`dms.query.reader.pipelined_read`): BEGIN READ ONLY, the reader's
settings, the query and COMMIT go to PostgreSQL as one pipeline, with the same guarantees as the
transaction of `reader_transaction`: the reader role, read-only, its limits, and a connection left idle
and clean for the pool after a failure. Checked against what the real server reports of the session."""

from __future__ import annotations

import psycopg
import pytest

from dms.query.reader import READER_ROLE, WORK_MEM, pipelined_read
from dms.query.sqlcompose import statement


@pytest.fixture()
def conn(pg_conn: psycopg.Connection) -> psycopg.Connection:
    """A fresh database with the reader role (created by the migrations of a deployment) and one table."""
    exists = pg_conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone()
    if not exists:
        pg_conn.execute(statement("CREATE ROLE {role} NOLOGIN", role=READER_ROLE))
    pg_conn.execute("CREATE TABLE stars (id bigint, mag double precision)")
    pg_conn.execute("INSERT INTO stars VALUES (1, 10.5), (2, 11.25), (3, NULL)")
    pg_conn.execute(statement("GRANT SELECT ON stars TO {role}", role=READER_ROLE))
    return pg_conn


def test_the_query_runs_as_the_reader_in_a_read_only_transaction_with_its_limits(
    conn: psycopg.Connection,
) -> None:
    answer = pipelined_read(
        conn,
        "SELECT current_user::text AS who, current_setting('transaction_read_only') AS ro, "
        "current_setting('work_mem') AS work_mem, current_setting('statement_timeout') AS timeout",
        None,
        1.5,
    )
    assert answer is not None
    rows, columns = answer
    assert rows == [(READER_ROLE, "on", WORK_MEM, "1500ms")]
    assert [name for name, _ in columns] == ["who", "ro", "work_mem", "timeout"]
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # the settings were the transaction's own: the session is as it was
    assert conn.execute("SELECT current_user::text, current_setting('statement_timeout')").fetchone() == (
        conn.info.user,
        "0",
    )


def test_parameters_are_bound_and_rows_read_in_binary(conn: psycopg.Connection) -> None:
    answer = pipelined_read(conn, "SELECT id, mag FROM stars WHERE id >= %(lo)s ORDER BY id", {"lo": 2}, None)
    assert answer is not None
    assert answer[0] == [(2, 11.25), (3, None)]
    assert [oid for _, oid in answer[1]] == [20, 701]  # bigint, double precision


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT 1 / 0", psycopg.errors.DivisionByZero),
        ("INSERT INTO stars VALUES (4, 1.0)", psycopg.errors.ReadOnlySqlTransaction),
        ("SELECT pg_sleep(5)", psycopg.errors.QueryCanceled),
        ("SELECT * FROM pg_authid", psycopg.errors.InsufficientPrivilege),
    ],
)
def test_a_failed_query_leaves_the_connection_idle_and_unchanged(
    conn: psycopg.Connection, sql: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        pipelined_read(conn, sql, None, 0.2)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*), current_user::text FROM stars").fetchone() == (3, conn.info.user)
    answer = pipelined_read(conn, "SELECT count(*) FROM stars", None, None)
    assert answer is not None and answer[0] == [(3,)]


def test_a_connection_inside_a_transaction_is_left_to_the_caller(conn: psycopg.Connection) -> None:
    with conn.transaction():
        assert pipelined_read(conn, "SELECT 1", None, None) is None


def test_failures_after_many_queries_never_lose_a_prepared_statement(conn: psycopg.Connection) -> None:
    """psycopg prepares a statement after its fifth use; one skipped in a pipeline after a failed query
    must not be taken for prepared (its next use failed with 'prepared statement does not exist')."""
    for i in range(12):
        sql = "SELECT 1 / (%(i)s - %(i)s)" if i % 3 == 2 else "SELECT count(*) FROM stars WHERE id > %(i)s"
        if i % 3 == 2:
            with pytest.raises(psycopg.errors.DivisionByZero):
                pipelined_read(conn, sql, {"i": i}, 5)
        else:
            answer = pipelined_read(conn, sql, {"i": i % 3}, 5)
            assert answer is not None and answer[0] == [(3 - i % 3,)]
