"""The read-only role every user query runs as, on the control database and on PostgreSQL shards.

A user query runs in a transaction that is READ ONLY from its first statement (``BEGIN READ ONLY``), as the
NOLOGIN role ``dms_reader`` (``SET LOCAL ROLE``; created by control migration c0005 and shard migration
s0002), with a statement timeout and bounded memory and temporary files. The reader may read the published
schemas and the catalog tables and nothing else (not ``dms.*``: jobs, placement, registry).

Small tables a query needs on the database (uploads, the results of its WITH queries and subqueries) cannot
be created in a READ ONLY transaction: `create_temp_tables` creates them first, as the reader, in a
transaction of their own, with quoted names; `drop_temp_tables` removes them when the query is over.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from dms.query.sqlcompose import column_definitions, ident, setting, statement

READER_ROLE = "dms_reader"
WORK_MEM = "64MB"
"""Memory of one sort or hash step of a user query, before it spills to temporary files."""
TEMP_FILE_LIMIT = "1GB"
"""Temporary file space one user query may use; a query that needs more fails (set only when the
deployment's login is a superuser: PostgreSQL lets no one else set it)."""


@contextmanager
def reader_transaction(
    conn: psycopg.Connection[Any], timeout: float | None, *, one_message: bool = False
) -> Iterator[None]:
    """A READ ONLY transaction as the reader role with the query limits; the caller runs the query in it.

    With `one_message` (an autocommit connection outside a transaction, and a caller that runs plain
    cursors only), BEGIN and the settings go to the server as one message: one round trip fewer."""
    if one_message and conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        with _one_message_transaction(conn, timeout):
            yield
        return
    previous = conn.read_only
    conn.read_only = True  # psycopg then starts the transaction with BEGIN READ ONLY
    settings = _settings(conn, timeout)
    try:
        with conn.transaction():
            # one round trip for all of them (several statements without parameters are one message)
            conn.execute(sql.SQL("; ").join(settings))
            yield
    finally:
        _restore_read_only(conn, previous)


@contextmanager
def _one_message_transaction(conn: psycopg.Connection[Any], timeout: float | None) -> Iterator[None]:
    conn.execute(sql.SQL("; ").join([sql.SQL("BEGIN READ ONLY"), *_settings(conn, timeout)]))
    try:
        yield
    except BaseException:
        if not conn.closed:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:  # a broken connection: it is closed, not pooled again
                conn.close()
        raise
    conn.execute("COMMIT")


def pipelined_read(
    conn: psycopg.Connection[Any],
    query: str,
    params: dict[str, Any] | None,
    timeout: float | None,
) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]] | None:
    """Rows and (name, type oid) columns of one read-only statement run as the reader role, with BEGIN READ
    ONLY, the settings, the statement and COMMIT sent in one pipeline: one round trip to the server instead
    of three (the statement with `params` bound and its rows in binary). None when `conn` cannot take it
    (not an idle autocommit connection): the caller uses `reader_transaction`."""
    if not (conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
        return None
    cursor = conn.cursor()
    try:
        # Never prepared: psycopg would count a statement skipped after a failed one as prepared (the
        # server never saw its PREPARE), and the connection's next use of it would fail.
        with conn.pipeline():
            conn.execute("BEGIN READ ONLY", prepare=False)
            for statement_ in _settings(conn, timeout):
                conn.execute(statement_, prepare=False)
            if params:
                cursor.execute(query, params, binary=True)
            else:
                cursor.execute(query)
            conn.execute("COMMIT", prepare=False)
        rows = cursor.fetchall()
        columns = [(d.name, d.type_code) for d in cursor.description or []]
    except BaseException:
        _roll_back(conn)
        raise
    finally:
        cursor.close()
    return rows, columns


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End the failed transaction of a connection that goes back to its pool."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:  # a broken connection: it is closed, not pooled again
        conn.close()


def _settings(conn: psycopg.Connection[Any], timeout: float | None) -> list[sql.Composed]:
    settings: list[sql.Composed] = []
    if conn.info.parameter_status("is_superuser") == "on":
        settings.append(setting("temp_file_limit", TEMP_FILE_LIMIT))
    settings.append(statement("SET LOCAL ROLE {role}", role=READER_ROLE))
    settings.append(setting("work_mem", WORK_MEM))
    if timeout is not None:
        settings.append(setting("statement_timeout", max(1, int(timeout * 1000))))
    return settings


def _restore_read_only(conn: psycopg.Connection[Any], previous: bool | None) -> None:
    if conn.closed:
        return
    try:
        conn.read_only = previous
    except psycopg.Error:  # a broken connection: it is closed, not pooled again
        conn.close()


def create_temp_tables(conn: psycopg.Connection[Any], tables: dict[str, pa.Table]) -> None:
    """The shipped tables as temporary tables owned by the reader (names and columns quoted)."""
    from dms.schema.catalog import SQL_TYPES, column_type_name

    if not tables:
        return
    with conn.transaction():
        conn.execute(statement("SET LOCAL ROLE {role}", role=READER_ROLE))
        for name, table in tables.items():
            columns = []
            for column_field in table.schema:
                try:
                    sql_type = SQL_TYPES[column_type_name(column_field.type)]
                except Exception:
                    sql_type = "text"
                # lower case, as the binder spells the columns of shipped tables (it folds their names)
                columns.append((column_field.name.lower(), sql_type))
            target = ident(name)
            conn.execute(
                statement(
                    "CREATE TEMP TABLE {name} ({columns})", name=target, columns=column_definitions(columns)
                )
            )
            buffer = io.BytesIO()
            pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            copy_sql = statement("COPY {name} FROM STDIN (FORMAT csv)", name=target)
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.write(buffer.getbuffer())


def drop_temp_tables(conn: psycopg.Connection[Any]) -> None:
    """Remove every temporary table of the session (pooled connections are reused by later queries)."""
    if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        conn.execute("DISCARD TEMP")
