"""Catalog data on a shard: how loaders write chunks and how the engine reads and queries them.

Two implementations of one small interface, registered by shard kind:
- `ParquetStore` (DuckDB shards): one Parquet file per chunk and load, sorted by `_healpix_29` in small row
  groups so DuckDB prunes by range; queried by an in-process DuckDB connection that has the shard's UDF
  macros (persisted in the shard's .duckdb file).
- `PostgresStore` (PostgreSQL shards): one table per catalog table with a `_load_id` column, loaded by COPY,
  indexed (and clustered) on `_healpix_29` and on the id column.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from queue import Empty, LifoQueue
from typing import Any, ClassVar

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dms.errors import DMSError
from dms.schema.catalog import SQL_TYPES, CatalogTable
from dms.shards import DuckDBShard, PostgresShard, ShardBackend

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 16_384
REPLICATED_CHUNK = (-1, -1)


class ShardQueryError(DMSError):
    """A per-shard query failed on the shard."""

    def __init__(self, shard: str, message: str) -> None:
        super().__init__(f"shard {shard!r}: {message}")
        self.shard = shard


class ShardUnavailable(ShardQueryError):
    """The shard cannot be reached (server down, files missing): a replica may answer instead."""


class ShardCancelled(DMSError):
    """The per-shard query was cancelled (by the user or a timeout)."""


@dataclass(frozen=True)
class ChunkFile:
    chunk_order: int
    chunk_id: int
    path: str
    row_count: int
    overlap_row_count: int


_STORES: dict[str, type[ShardStore]] = {}


class ShardStore(ABC):
    """Catalog data on one shard."""

    kind: ClassVar[str]
    dialect: ClassVar[str]

    def __init__(self, backend: ShardBackend) -> None:
        self.backend = backend
        self.name = backend.name

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _STORES[cls.kind] = cls

    # loading
    @abstractmethod
    def write_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> list[ChunkFile]:
        """Store rows (sorted by _chunk, _healpix_29) of one load; not visible until the load commits."""

    @abstractmethod
    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        """Remove whatever an uncommitted load stored."""

    def drop_table(self, table: CatalogTable) -> None:  # noqa: B027 - optional for stores without tables
        """Remove a table's data."""

    # querying
    @abstractmethod
    def execute(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
    ) -> pa.Table:
        """Run one per-shard query (with small `tables` shipped to the shard) and return its rows."""

    def close(self) -> None:  # noqa: B027
        """Release connections."""


def store_for(backend: ShardBackend) -> ShardStore:
    return _STORES[backend.kind](backend)


def physical_name(table: CatalogTable) -> str:
    """The table's name on a PostgreSQL shard (schema-qualified, quoted)."""
    return f'"{table.schema_name}"."{table.table_name}"'


# --- DuckDB / Parquet --------------------------------------------------------------------------------------


class ParquetStore(ShardStore):
    kind = "duckdb"
    dialect = "duckdb"

    def __init__(self, backend: ShardBackend) -> None:
        super().__init__(backend)
        assert isinstance(backend, DuckDBShard)
        self.database = backend.path
        self.root = backend.path.with_suffix("")
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def table_dir(self, table: CatalogTable) -> Path:
        return self.root / table.schema_name / table.table_name

    def write_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> list[ChunkFile]:
        directory = self.table_dir(table) / f"load{load_id}"
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for order, pixel, part in _split_chunks(table, rows):
            name = "replicated.parquet" if order < 0 else f"chunk-{order}-{pixel}.parquet"
            path = directory / name
            overlap = int(pa.compute.sum(part["_overlap"]).as_py() or 0) if table.partitioned else 0
            if not path.exists():  # files appear whole (rename), so an existing one is complete: resume
                tmp = path.with_suffix(".tmp")
                pq.write_table(
                    part, tmp, row_group_size=ROW_GROUP_ROWS, compression="lz4", write_statistics=True
                )
                os.replace(tmp, path)
            files.append(
                ChunkFile(order, pixel, str(path.relative_to(self.root)), part.num_rows - overlap, overlap)
            )
        return files

    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        directory = self.table_dir(table) / f"load{load_id}"
        if directory.exists():
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()

    def drop_table(self, table: CatalogTable) -> None:
        import shutil

        shutil.rmtree(self.table_dir(table), ignore_errors=True)

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the shard's database (macros included), one per calling thread's query."""
        with self._lock:
            if self._conn is None:
                self._conn = duckdb.connect(str(self.database), read_only=True)
            cursor = self._conn.cursor()
        cursor.execute("SET integer_division = true")  # integer / integer as in PostgreSQL and ADQL
        return cursor

    def execute(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
    ) -> pa.Table:
        cursor = self.connection()
        for name, table in (tables or {}).items():
            cursor.register(name, table)
        done = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout

        def watch() -> None:
            while not done.wait(0.02):
                if (cancel is not None and cancel.is_set()) or (
                    deadline is not None and time.monotonic() > deadline
                ):
                    cursor.interrupt()
                    return

        watcher = threading.Thread(target=watch, daemon=True) if cancel is not None or deadline else None
        if watcher:
            watcher.start()
        try:
            return cursor.sql(sql).to_arrow_table()
        except duckdb.InterruptException as exc:
            raise ShardCancelled(f"shard {self.name!r}: query cancelled") from exc
        except duckdb.IOException as exc:
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc
        except duckdb.Error as exc:
            raise ShardQueryError(self.name, str(exc).splitlines()[0]) from exc
        finally:
            done.set()
            cursor.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# --- PostgreSQL --------------------------------------------------------------------------------------------


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
}


class PostgresStore(ShardStore):
    kind = "postgres"
    dialect = "postgres"

    def __init__(self, backend: ShardBackend) -> None:
        super().__init__(backend)
        assert isinstance(backend, PostgresShard)
        url = backend.sqlalchemy_url()
        self.conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool: LifoQueue[psycopg.Connection] = LifoQueue()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            conn = self._pool.get_nowait()
        except Empty:
            conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        try:
            yield conn
        except psycopg.OperationalError:
            conn.close()
            raise
        else:
            if not conn.closed:
                self._pool.put(conn)

    def write_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> list[ChunkFile]:
        name = physical_name(table)
        with self._connection() as conn, conn.transaction():
            created = self._create_table(conn, table)
            conn.execute(f"DELETE FROM {name} WHERE _load_id = %s", (load_id,))
            data = _widen_floats(rows).append_column(
                "_load_id", pa.array([load_id] * rows.num_rows, pa.int32())
            )
            buffer = io.BytesIO()
            pacsv.write_csv(data, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            columns = ", ".join(f'"{c}"' for c in data.column_names)
            with conn.cursor() as cur, cur.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getbuffer())
            if created:
                self._create_indexes(conn, table)
            conn.execute(f"ANALYZE {name}")
        return [
            ChunkFile(
                order, pixel, name, part.num_rows - _overlap_count(table, part), _overlap_count(table, part)
            )
            for order, pixel, part in _split_chunks(table, rows)
        ]

    def _create_table(self, conn: psycopg.Connection, table: CatalogTable) -> bool:
        exists = conn.execute("SELECT to_regclass(%s)", (physical_name(table),)).fetchone()
        if exists and exists[0] is not None:
            return False
        columns = [f'"{c.name}" {SQL_TYPES[c.datatype]}' for c in table.columns]
        if table.partitioned:
            columns += ["_healpix_29 bigint NOT NULL", "_chunk bigint NOT NULL", "_overlap boolean NOT NULL"]
        columns.append("_load_id integer NOT NULL")
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{table.schema_name}"')
        conn.execute(f"CREATE TABLE {physical_name(table)} ({', '.join(columns)})")
        return True

    def _create_indexes(self, conn: psycopg.Connection, table: CatalogTable) -> None:
        base = f"{table.schema_name}_{table.table_name}"
        name = physical_name(table)
        if table.partitioned:
            conn.execute(f'CREATE INDEX "{base}_healpix_29" ON {name} (_healpix_29)')
            conn.execute(f'CLUSTER {name} USING "{base}_healpix_29"')
            conn.execute(f'CREATE INDEX "{base}_chunk" ON {name} (_chunk)')
        key = table.id_column or table.director_key_column
        if key:
            conn.execute(f'CREATE INDEX "{base}_{key.lower()}" ON {name} ("{key}")')

    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        with self._connection() as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (physical_name(table),)).fetchone()
            if exists and exists[0] is not None:
                conn.execute(f"DELETE FROM {physical_name(table)} WHERE _load_id = %s", (load_id,))

    def drop_table(self, table: CatalogTable) -> None:
        with self._connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {physical_name(table)}")

    def execute(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
    ) -> pa.Table:
        try:
            with self._connection() as conn:
                try:
                    return PostgresConnection.run(
                        conn, sql, timeout=timeout, cancel=cancel, tables=tables, read_only=True
                    )
                except ShardQueryError as exc:
                    raise ShardQueryError(self.name, str(exc).split(": ", 1)[-1]) from exc
        except psycopg.OperationalError as exc:  # the server is down or unreachable
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except Empty:
                return


class PostgresConnection:
    """One psycopg connection that runs a query with a timeout, cancellation and shipped temp tables."""

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
        read_only: bool = False,
    ) -> pa.Table:
        assert self.conn is not None
        return self.run(self.conn, sql, timeout=timeout, cancel=cancel, tables=tables, read_only=read_only)

    @staticmethod
    def run(
        conn: psycopg.Connection,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
        read_only: bool = False,
    ) -> pa.Table:
        done = threading.Event()

        def watch() -> None:
            assert cancel is not None
            while not done.wait(0.02):
                if cancel.is_set():
                    conn.cancel_safe()
                    return

        watcher = threading.Thread(target=watch, daemon=True) if cancel is not None else None
        if watcher:
            watcher.start()
        try:
            with conn.transaction():
                if timeout is not None:
                    conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
                for name, table in (tables or {}).items():
                    _temp_table(conn, name, table)
                if read_only:
                    conn.execute("SET TRANSACTION READ ONLY")
                with conn.cursor() as cur:
                    cur.execute(sql)
                    rows = cur.fetchall()
                    description = cur.description or []
        except psycopg.errors.QueryCanceled as exc:
            raise ShardCancelled(str(exc).splitlines()[0]) from exc
        except psycopg.Error as exc:
            raise ShardQueryError("postgres", str(exc).splitlines()[0]) from exc
        finally:
            done.set()
        return _rows_to_arrow(rows, [(d.name, d.type_code) for d in description])


def _temp_table(conn: psycopg.Connection, name: str, table: pa.Table) -> None:
    from dms.schema.catalog import column_type_name

    columns = []
    for column_field in table.schema:
        try:
            sql_type = SQL_TYPES[column_type_name(column_field.type)]
        except Exception:
            sql_type = "text"
        columns.append(f'"{column_field.name}" {sql_type}')
    conn.execute(f'CREATE TEMP TABLE "{name}" ({", ".join(columns)}) ON COMMIT DROP')
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    with conn.cursor() as cur, cur.copy(f'COPY "{name}" FROM STDIN (FORMAT csv)') as copy:
        copy.write(buffer.getbuffer())


def _rows_to_arrow(rows: list[tuple[Any, ...]], columns: list[tuple[str, int]]) -> pa.Table:
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


def _widen_floats(table: pa.Table) -> pa.Table:
    """float32 columns as float64, so the text COPY carries each value exactly (PostgreSQL stores them as
    double precision)."""
    for i, column_field in enumerate(table.schema):
        if pa.types.is_float32(column_field.type):
            table = table.set_column(i, column_field.name, table.column(i).cast(pa.float64()))
    return table


def _overlap_count(table: CatalogTable, part: pa.Table) -> int:
    if not table.partitioned:
        return 0
    return int(pa.compute.sum(part["_overlap"]).as_py() or 0)


def _split_chunks(table: CatalogTable, rows: pa.Table) -> Iterator[tuple[int, int, pa.Table]]:
    """(order, pixel, rows) of each chunk in rows sorted by _chunk (replicated tables: one part)."""
    import numpy as np

    from dms.loaders.partition import split_nuniq

    if not table.partitioned:
        yield REPLICATED_CHUNK[0], REPLICATED_CHUNK[1], rows
        return
    chunk = rows["_chunk"].to_numpy()
    if len(chunk) == 0:
        return
    starts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1]])
    ends = np.r_[starts[1:], len(chunk)]
    orders, pixels = split_nuniq(chunk[starts].astype(np.int64))
    for start, end, order, pixel in zip(starts, ends, orders, pixels, strict=True):
        yield int(order), int(pixel), rows.slice(int(start), int(end - start))
