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
from psycopg.sql import Identifier

from dms.errors import DMSError
from dms.query.integrity import file_checksum
from dms.query.reader import READER_ROLE, create_temp_tables, drop_temp_tables, reader_transaction
from dms.query.sqlcompose import column_definitions, ident, names, statement
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


class ShardWriteError(DMSError):
    """A shard refused the rows of a load (the load is discarded; nothing becomes visible)."""


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
    checksum: str | None = None  # of a Parquet file's bytes (dms.query.integrity); None on PostgreSQL


_STORES: dict[str, type[ShardStore]] = {}

LOCKED_DOWN: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}
"""DuckDB settings of every connection that runs user SQL: no extension is installed or loaded on demand."""


def confine(conn: duckdb.DuckDBPyConnection, directories: list[Path]) -> None:
    """Lock a DuckDB connection that runs user SQL: it reads files only under `directories` (a shard's
    Parquet files; none for the merge database), cannot install or load extensions, divides integers as
    PostgreSQL and ADQL do, and no statement can change these settings (`lock_configuration`)."""
    locked = conn.execute("SELECT current_setting('lock_configuration')").fetchone()
    if locked and locked[0] in (True, "true"):
        return  # another connection of this process to the same database file locked it already
    if directories:
        conn.execute("SET allowed_directories = ?", [[f"{d}/" for d in directories]])
    conn.execute("SET GLOBAL integer_division = true")
    conn.execute("SET GLOBAL enable_external_access = false")
    conn.execute("SET GLOBAL lock_configuration = true")


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

    def has_table(self, table: CatalogTable) -> bool:
        """Whether the shard holds anything under the table's name (before a new table's first load: data
        that is not this table's, which undoing a failed `--create` must leave alone)."""
        return False

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
    """The table's name on a PostgreSQL shard as the registry records it (schema-qualified, quoted); SQL
    statements use `_table_ident` instead."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (table.schema_name, table.table_name))


def _table_ident(table: CatalogTable) -> Identifier:
    return ident((table.schema_name, table.table_name))


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
            relative = str(path.relative_to(self.root))
            rows = part.num_rows - overlap
            files.append(ChunkFile(order, pixel, relative, rows, overlap, file_checksum(path)))
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

    def has_table(self, table: CatalogTable) -> bool:
        return self.table_dir(table).exists()

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the shard's database (macros included), one per calling thread's query."""
        with self._lock:
            if self._conn is None:
                self._conn = duckdb.connect(str(self.database), read_only=True, config=LOCKED_DOWN)
                confine(self._conn, [self.root])
            return self._conn.cursor()

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
        try:
            self._copy_load(table, load_id, rows)
        except (psycopg.Error, ShardWriteError) as exc:
            raise ShardWriteError(
                f"shard {self.name!r} cannot store the rows of {table.name}: {str(exc).splitlines()[0]}"
            ) from exc
        name = physical_name(table)
        return [
            ChunkFile(
                order, pixel, name, part.num_rows - _overlap_count(table, part), _overlap_count(table, part)
            )
            for order, pixel, part in _split_chunks(table, rows)
        ]

    def _copy_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> None:
        target = _table_ident(table)
        with self._connection() as conn, conn.transaction():
            created = self._create_table(conn, table)
            conn.execute(statement("DELETE FROM {table} WHERE _load_id = %s", table=target), (load_id,))
            data = _copy_ready(rows).append_column(
                "_load_id", pa.array([load_id] * rows.num_rows, pa.int32())
            )
            buffer = io.BytesIO()
            pacsv.write_csv(data, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            copy_sql = statement(
                "COPY {table} ({columns}) FROM STDIN (FORMAT csv)",
                table=target,
                columns=names(data.column_names),
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.write(buffer.getbuffer())
            if created:
                self._create_indexes(conn, table)
            conn.execute(statement("ANALYZE {table}", table=target))

    def _exists(self, conn: psycopg.Connection, table: CatalogTable) -> bool:
        regclass = _table_ident(table).as_string(conn)
        exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
        return bool(exists and exists[0] is not None)

    def _create_table(self, conn: psycopg.Connection, table: CatalogTable) -> bool:
        """The table (and its schema), readable by the reader role user queries run as."""
        if self._exists(conn, table):
            return False
        columns = [(c.name, SQL_TYPES[c.datatype]) for c in table.columns]
        if table.partitioned:
            columns += [("_healpix_29", "bigint not null"), ("_chunk", "bigint not null")]
            columns.append(("_overlap", "boolean not null"))
        columns.append(("_load_id", "integer not null"))
        schema, target = ident(table.schema_name), _table_ident(table)
        conn.execute(statement("CREATE SCHEMA IF NOT EXISTS {schema}", schema=schema))
        conn.execute(
            statement("CREATE TABLE {table} ({columns})", table=target, columns=column_definitions(columns))
        )
        conn.execute(statement("GRANT USAGE ON SCHEMA {schema} TO {role}", schema=schema, role=READER_ROLE))
        conn.execute(statement("GRANT SELECT ON {table} TO {role}", table=target, role=READER_ROLE))
        return True

    def _create_indexes(self, conn: psycopg.Connection, table: CatalogTable) -> None:
        base = f"{table.schema_name}_{table.table_name}"
        target = _table_ident(table)
        if table.partitioned:
            healpix = ident(f"{base}_healpix_29")
            conn.execute(
                statement("CREATE INDEX {index} ON {table} (_healpix_29)", index=healpix, table=target)
            )
            conn.execute(statement("CLUSTER {table} USING {index}", table=target, index=healpix))
            chunk = ident(f"{base}_chunk")
            conn.execute(statement("CREATE INDEX {index} ON {table} (_chunk)", index=chunk, table=target))
        key = table.id_column or table.director_key_column
        if key:
            index = ident(f"{base}_{key.lower()}")
            conn.execute(
                statement("CREATE INDEX {index} ON {table} ({key})", index=index, table=target, key=key)
            )

    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        with self._connection() as conn:
            if self._exists(conn, table):
                conn.execute(
                    statement("DELETE FROM {table} WHERE _load_id = %s", table=_table_ident(table)),
                    (load_id,),
                )

    def drop_table(self, table: CatalogTable) -> None:
        with self._connection() as conn:
            conn.execute(statement("DROP TABLE IF EXISTS {table}", table=_table_ident(table)))

    def has_table(self, table: CatalogTable) -> bool:
        with self._connection() as conn:
            return self._exists(conn, table)

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
                    return PostgresConnection.run(conn, sql, timeout=timeout, cancel=cancel, tables=tables)
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
    ) -> pa.Table:
        """Run one user query as the reader role in a READ ONLY transaction (see `dms.query.reader`), with
        `tables` shipped as temporary tables first."""
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
            create_temp_tables(conn, tables or {})
            with reader_transaction(conn, timeout), conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall()
                description = cur.description or []
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
        return _rows_to_arrow(rows, [(d.name, d.type_code) for d in description])


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


def _copy_ready(table: pa.Table) -> pa.Table:
    """The rows as the text COPY can carry them exactly: float32 columns as float64 (PostgreSQL stores them
    as double precision) and binary columns as bytea's hex text (``\\x0aff``), since CSV holds text only and
    arbitrary bytes are not valid UTF-8."""
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
