"""A PostgreSQL shard: one table per catalog table (schema-qualified as in the catalog) with a `_load_id`
column, loaded by COPY, indexed (and clustered) on `_healpix_29` and on the id column; queried as the reader
role in READ ONLY transactions over pooled connections."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, LiteralString

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg.sql import Identifier
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlglot import exp

from dms.config import ShardConfig, mask_password, parse_postgres_url
from dms.query.reader import READER_ROLE
from dms.query.sqlcompose import column_definitions, ident, names, setting, statement
from dms.shards.base import (
    ChunkFile,
    ShardBackend,
    ShardQueryError,
    ShardUnavailable,
    ShardWriteError,
    overlap_count,
)
from dms.shards.postgres.transfer import PostgresConnection, copy_binary, copy_ready

if TYPE_CHECKING:
    from dms.schema.catalog import CatalogTable

CONNECT_TIMEOUT = 10
"""Seconds to wait for a new connection to the shard's server."""
POOL_SIZE = 16
"""Most connections the process keeps to one shard."""
POOL_WAIT = 2.0
"""Seconds to wait for a pooled connection before opening one of its own (whose error is the server's)."""
INDEX_MEMORY = "256MB"
"""maintenance_work_mem of a first load's index builds (PostgreSQL's default, 64MB, sorts a 10M-row
shard's index in several passes on disk)."""


def physical_name(table: CatalogTable) -> str:
    """The table's name on a PostgreSQL shard as the registry records it (schema-qualified, quoted); SQL
    statements use `table_ident` instead."""
    return ".".join(
        '"' + part.replace('"', '""') + '"' for part in (table.storage_schema, table.storage_table)
    )


def table_ident(table: CatalogTable) -> Identifier:
    return ident((table.storage_schema, table.storage_table))


class PostgresShard(ShardBackend):
    kind = "postgres"
    dialect = "postgres"
    shared_table = True

    def __init__(self, config: ShardConfig, data_dir: Path) -> None:
        super().__init__(config, data_dir)
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def sqlalchemy_url(self) -> sa.URL:
        assert self.config.url is not None
        return parse_postgres_url(self.config.url, what=f"shard {self.name!r} url")

    def location(self) -> str:
        assert self.config.url is not None
        return mask_password(self.config.url)

    @property
    def conninfo(self) -> str:
        """The libpq URL of the shard's database."""
        url = self.sqlalchemy_url()
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _connections(self) -> ConnectionPool:
        """The shard's connection pool (psycopg-pool), opened on first use; connections are kept between
        queries, so a per-shard query costs no connection set-up."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.conninfo,
                    kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
                    min_size=1,
                    max_size=POOL_SIZE,
                    open=False,
                    name=f"dms-shard-{self.name}",
                    timeout=POOL_WAIT,
                    num_workers=1,
                )
                self._pool.open(wait=False)
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; when the pool has none within POOL_WAIT seconds (the server is down, or every
        connection is busy), a connection of its own, so the caller sees the server's own error."""
        pool = self._connections()
        try:
            context = pool.connection(timeout=POOL_WAIT)
            conn = context.__enter__()
        except PoolTimeout:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
                yield conn
            return
        try:
            yield conn
        except BaseException as exc:
            if isinstance(exc, psycopg.OperationalError):
                conn.close()  # broken: the pool discards it and opens another
            context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            context.__exit__(None, None, None)

    # storing chunks ------------------------------------------------------------------------------------

    def write_chunks(
        self, table: CatalogTable, load_id: int, chunks: Iterable[tuple[int, int, pa.Table]]
    ) -> list[ChunkFile]:
        try:
            return self._copy_load(table, load_id, chunks)
        except (psycopg.Error, ShardWriteError) as exc:
            raise ShardWriteError(
                f"shard {self.name!r} cannot store the rows of {table.name}: {str(exc).splitlines()[0]}"
            ) from exc

    def _copy_load(
        self, table: CatalogTable, load_id: int, chunks: Iterable[tuple[int, int, pa.Table]]
    ) -> list[ChunkFile]:
        """One transaction: the load's earlier rows (a resumed load) deleted, then a COPY per chunk, in
        PostgreSQL's binary format when its columns allow (fixed-width, no NULLs), else as CSV.

        A table's first load creates it in this transaction, so its rows are copied FREEZE (no later pass
        sets their hint bits or freezes them) and its indexes are built once, after the rows, instead of
        being updated row by row. The chunks come in `_healpix_29` order, so the table is stored in that
        order without a CLUSTER."""
        target, name = table_ident(table), physical_name(table)
        files = []
        with self._connection() as conn, conn.transaction():
            created = self._create_table(conn, table)
            if not created:
                conn.execute(statement("DELETE FROM {table} WHERE _load_id = %s", table=target), (load_id,))
            for order, pixel, part in chunks:
                data = part.append_column("_load_id", pa.array(np.full(part.num_rows, load_id, np.int32)))
                self._copy(conn, target, data, freeze=created)
                overlap = overlap_count(table, part)
                files.append(ChunkFile(order, pixel, name, part.num_rows - overlap, overlap))
            if created:
                conn.execute(setting("maintenance_work_mem", INDEX_MEMORY))
                self._create_indexes(conn, table)
            conn.execute(statement("ANALYZE {table}", table=target))
        return files

    @staticmethod
    def _copy(conn: psycopg.Connection, target: Identifier, data: pa.Table, freeze: bool = False) -> None:
        binary = copy_binary(data)
        columns = names(data.column_names)
        if binary is not None:
            template: LiteralString = "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
            if freeze:
                template = "COPY {table} ({columns}) FROM STDIN (FORMAT binary, FREEZE)"
            copy_sql = statement(template, table=target, columns=columns)
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.write(binary)
            return
        buffer = io.BytesIO()
        pacsv.write_csv(
            copy_ready(data), buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed")
        )
        template = "COPY {table} ({columns}) FROM STDIN (FORMAT csv)"
        if freeze:
            template = "COPY {table} ({columns}) FROM STDIN (FORMAT csv, FREEZE)"
        copy_sql = statement(template, table=target, columns=columns)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(buffer.getbuffer())

    def _exists(self, conn: psycopg.Connection, table: CatalogTable) -> bool:
        regclass = table_ident(table).as_string(conn)
        exists = conn.execute("SELECT to_regclass(%s)", (regclass,)).fetchone()
        return bool(exists and exists[0] is not None)

    def _create_table(self, conn: psycopg.Connection, table: CatalogTable) -> bool:
        """The table (and its schema), readable by the reader role user queries run as."""
        from dms.schema.catalog import SQL_TYPES

        if self._exists(conn, table):
            return False
        columns = [(c.name, SQL_TYPES[c.datatype]) for c in table.columns]
        if table.partitioned:
            columns += [("_healpix_29", "bigint not null"), ("_chunk", "bigint not null")]
            columns.append(("_overlap", "boolean not null"))
        columns.append(("_load_id", "integer not null"))
        schema, target = ident(table.storage_schema), table_ident(table)
        conn.execute(statement("CREATE SCHEMA IF NOT EXISTS {schema}", schema=schema))
        conn.execute(
            statement("CREATE TABLE {table} ({columns})", table=target, columns=column_definitions(columns))
        )
        conn.execute(statement("GRANT USAGE ON SCHEMA {schema} TO {role}", schema=schema, role=READER_ROLE))
        conn.execute(statement("GRANT SELECT ON {table} TO {role}", table=target, role=READER_ROLE))
        return True

    def _create_indexes(self, conn: psycopg.Connection, table: CatalogTable) -> None:
        base = f"{table.storage_schema}_{table.storage_table}"
        target = table_ident(table)
        if table.partitioned:
            healpix = ident(f"{base}_healpix_29")
            conn.execute(
                statement("CREATE INDEX {index} ON {table} (_healpix_29)", index=healpix, table=target)
            )
            chunk = ident(f"{base}_chunk")
            conn.execute(statement("CREATE INDEX {index} ON {table} (_chunk)", index=chunk, table=target))
        for region in table.region_columns:  # the cell-list prefilter of INTERSECTS (dms.query.regions)
            cells = region + "_moc"
            index = ident(f"{base}_{cells.lower()}")
            conn.execute(
                statement(
                    "CREATE INDEX {index} ON {table} USING gin ({cells})",
                    index=index,
                    table=target,
                    cells=ident(cells),
                )
            )
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
                    statement("DELETE FROM {table} WHERE _load_id = %s", table=table_ident(table)),
                    (load_id,),
                )

    def drop_table(self, table: CatalogTable) -> None:
        with self._connection() as conn:
            conn.execute(statement("DROP TABLE IF EXISTS {table}", table=table_ident(table)))

    def has_table(self, table: CatalogTable) -> bool:
        with self._connection() as conn:
            return self._exists(conn, table)

    # answering -----------------------------------------------------------------------------------------

    def relation(self, table: CatalogTable, files: list[str]) -> exp.Expression | None:
        return exp.Table(
            this=exp.to_identifier(table.storage_table, quoted=True),
            db=exp.to_identifier(table.storage_schema, quoted=True),
        )

    def execute(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
        params: dict[str, Any] | None = None,
    ) -> pa.Table:
        try:
            with self._connection() as conn:
                try:
                    return PostgresConnection.run(
                        conn, sql, timeout=timeout, cancel=cancel, tables=tables, params=params
                    )
                except ShardQueryError as exc:
                    raise ShardQueryError(self.name, str(exc).split(": ", 1)[-1]) from exc
        except psycopg.OperationalError as exc:  # the server is down or unreachable
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
