"""Rows in and out of PostgreSQL: COPY of a load's rows, and a user query run as the reader role with its
result as an Arrow table."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa

from dms.query.reader import create_temp_tables, drop_temp_tables, pipelined_read, reader_transaction
from dms.shards.base import ShardCancelled, ShardQueryError, ShardWriteError

CANCEL_POLL = 0.02
"""Seconds between checks of a running query's cancel event."""

_ARROW_FROM_OID: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    25: pa.string(),
    1043: pa.string(),
    1042: pa.string(),
    19: pa.string(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1082: pa.date32(),
    17: pa.binary(),
    26: pa.int64(),
    1022: pa.list_(pa.float64()),  # a region column's representation (dms.query.regions)
    1016: pa.list_(pa.int64()),
}


class PostgresConnection:
    """One psycopg connection that runs a user query (as the reader role, read-only) with a timeout,
    cancellation and shipped temporary tables."""

    def __init__(self, conninfo: str, application_name: str = "dms") -> None:
        self.conninfo = conninfo
        self.application_name = application_name
        self.conn: psycopg.Connection | None = None

    def __enter__(self) -> PostgresConnection:
        self.conn = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=10, application_name=self.application_name
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()

    def query(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
    ) -> pa.Table:
        assert self.conn is not None
        return self.run(self.conn, sql, timeout=timeout, cancel=cancel, tables=tables)

    @staticmethod
    def run(
        conn: psycopg.Connection,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
        params: dict[str, Any] | None = None,
    ) -> pa.Table:
        """Run one user query as the reader role in a READ ONLY transaction (see `dms.query.reader`; on an
        idle autocommit connection in one round trip), with `tables` shipped as temporary tables first;
        with `params`, bound to its ``%(name)s`` placeholders and the rows sent in binary (no text to
        parse for numbers)."""
        done = threading.Event()

        def watch() -> None:
            assert cancel is not None
            while not done.wait(CANCEL_POLL):
                if cancel.is_set():
                    conn.cancel_safe()
                    return

        watcher = threading.Thread(target=watch, daemon=True) if cancel is not None else None
        if watcher:
            watcher.start()
        try:
            create_temp_tables(conn, tables or {})
            answer = pipelined_read(conn, sql, params, timeout)
            if answer is None:
                with reader_transaction(conn, timeout, one_message=True), conn.cursor() as cur:
                    if params:
                        cur.execute(sql, params, binary=True)
                    else:
                        cur.execute(sql)
                    answer = cur.fetchall(), [(d.name, d.type_code) for d in cur.description or []]
        except psycopg.errors.QueryCanceled as exc:
            raise ShardCancelled(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise ShardQueryError("postgres", str(exc).splitlines()[0]) from exc
        finally:
            done.set()
            if tables and not conn.closed:
                try:
                    drop_temp_tables(conn)
                except psycopg.Error:
                    conn.close()
        return rows_to_arrow(*answer)


def rows_to_arrow(rows: list[tuple[Any, ...]], columns: list[tuple[str, int]]) -> pa.Table:
    arrays = []
    for i, (_, oid) in enumerate(columns):
        values = [row[i] for row in rows]
        arrays.append(_column_to_arrow(values, _ARROW_FROM_OID.get(oid)))
    names = _unique_names([c[0] for c in columns])
    return pa.Table.from_arrays(arrays, names=names)


def _column_to_arrow(values: list[Any], datatype: pa.DataType | None) -> pa.Array:
    if datatype is not None:
        return pa.array(values, datatype)
    # numeric (SUM/AVG of integers) and other types: integers stay exact, the rest become doubles
    present = [v for v in values if v is not None]
    if all(isinstance(v, Decimal) for v in present) and present:
        if all(v == v.to_integral_value() and abs(v) < 2**63 for v in present):
            return pa.array([None if v is None else int(v) for v in values], pa.int64())
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if not present:
        return pa.array(values, pa.float64() if values else pa.null())
    return pa.array(values)


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out


def copy_ready(table: pa.Table) -> pa.Table:
    """The rows as the text COPY can carry them exactly: float32 columns as float64 (PostgreSQL stores them
    as double precision), binary columns as bytea's hex text (``\\x0aff``), since CSV holds text only and
    arbitrary bytes are not valid UTF-8, and list columns (a region's representation) as array literals."""
    for i, column_field in enumerate(table.schema):
        if pa.types.is_string(column_field.type) or pa.types.is_large_string(column_field.type):
            nul = pa.compute.match_substring(table.column(i), "\x00")
            if pa.compute.any(nul).as_py():
                first = pa.compute.index(nul, True).as_py()
                raise ShardWriteError(
                    f"column {column_field.name!r} holds a NUL character (first in row {first}), which "
                    "PostgreSQL text cannot store: remove it, or load the column as binary"
                )
        if pa.types.is_float32(column_field.type):
            table = table.set_column(i, column_field.name, table.column(i).cast(pa.float64()))
        elif pa.types.is_binary(column_field.type) or pa.types.is_large_binary(column_field.type):
            values = table.column(i).to_pylist()
            hex_text = pa.array([None if v is None else "\\x" + v.hex() for v in values], pa.string())
            table = table.set_column(i, column_field.name, hex_text)
        elif pa.types.is_list(column_field.type):  # an array literal; repr keeps every double exact
            values = table.column(i).to_pylist()
            literal = pa.array([None if v is None else "{" + ",".join(map(repr, v)) + "}" for v in values])
            table = table.set_column(i, column_field.name, literal.cast(pa.string()))
    return table


COPY_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
"""The signature, flags and (empty) header extension of PostgreSQL's binary COPY format."""
COPY_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)

_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z, where binary timestamps count from
_POSTGRES_EPOCH_DAYS = 10_957  # 2000-01-01 in days since 1970-01-01


def _binary_column(column: pa.ChunkedArray) -> tuple[str, np.ndarray] | None:
    """(big-endian numpy type, values) of a column as its PostgreSQL column (`SQL_TYPES`) takes it in binary
    COPY, or None for a type without a fixed width."""
    kind = column.type
    if pa.types.is_boolean(kind):
        return "?", column.to_numpy(zero_copy_only=False)
    if pa.types.is_int8(kind) or pa.types.is_int16(kind):
        return ">i2", column.to_numpy()
    if pa.types.is_int32(kind):
        return ">i4", column.to_numpy()
    if pa.types.is_int64(kind):
        return ">i8", column.to_numpy()
    if pa.types.is_floating(kind):  # float columns are double precision on PostgreSQL
        return ">f8", column.to_numpy()
    if pa.types.is_timestamp(kind) and kind.unit == "us":
        return ">i8", column.cast(pa.int64()).to_numpy() - _POSTGRES_EPOCH_US
    if pa.types.is_date32(kind):
        return ">i4", column.cast(pa.int32()).to_numpy() - _POSTGRES_EPOCH_DAYS
    return None


def copy_binary(table: pa.Table) -> bytes | None:
    """The rows in PostgreSQL's binary COPY format, built column-wise as one numpy record array (each tuple:
    field count, then each field's length and big-endian value), or None when a column has NULLs or a
    variable-width type (text, bytea): those rows go as CSV instead."""
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    values = []
    for i, column in enumerate(table.columns):
        if column.null_count:
            return None
        converted = _binary_column(column)
        if converted is None:
            return None
        fields += [(f"length{i}", ">i4"), (f"value{i}", converted[0])]
        values.append(converted[1])
    tuples = np.empty(table.num_rows, np.dtype(fields))
    tuples["fields"] = table.num_columns
    for i, value in enumerate(values):
        tuples[f"length{i}"] = tuples.dtype[f"value{i}"].itemsize
        tuples[f"value{i}"] = value
    return COPY_BINARY_HEADER + tuples.tobytes() + COPY_BINARY_TRAILER
