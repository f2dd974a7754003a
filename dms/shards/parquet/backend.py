"""A DuckDB/Parquet shard: a directory of Parquet files (one per chunk and load, under
``<path without suffix>/<schema>/<table>/load<id>/``) beside a DuckDB database file that holds the shard's
schema version and UDF macros; queried by one long-lived, read-only, locked-down DuckDB connection (a cursor
per query)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlglot import exp

from dms.config import ShardConfig
from dms.shards.base import (
    ChunkFile,
    ShardBackend,
    ShardCancelled,
    ShardQueryError,
    ShardUnavailable,
    overlap_count,
    split_chunks,
)
from dms.shards.parquet.transfer import LOCKED_DOWN, confine, write_chunk_file

if TYPE_CHECKING:
    from dms.schema.catalog import CatalogTable

CANCEL_POLL = 0.02
"""Seconds between checks of a running query's cancel event and deadline."""


class DuckDBShard(ShardBackend):
    kind = "duckdb"
    dialect = "duckdb"
    shared_table = False  # a query reads only the files of committed loads, named by the registry

    def __init__(self, config: ShardConfig, data_dir: Path) -> None:
        super().__init__(config, data_dir)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The shard's DuckDB database file."""
        assert self.config.path is not None
        path = Path(self.config.path).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    @property
    def database(self) -> Path:
        return self.path

    @property
    def root(self) -> Path:
        """The directory of the shard's Parquet files (the registry's chunk file paths are relative to it)."""
        return self.path.with_suffix("")

    def sqlalchemy_url(self) -> sa.URL:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sa.URL.create("duckdb", database=str(self.path))

    def location(self) -> str:
        return str(self.path)

    # storing chunks ------------------------------------------------------------------------------------

    def table_dir(self, table: CatalogTable) -> Path:
        return self.root / table.storage_schema / table.storage_table

    def write_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> list[ChunkFile]:
        from dms.query.integrity import file_checksum

        directory = self.table_dir(table) / f"load{load_id}"
        directory.mkdir(parents=True, exist_ok=True)
        files = []
        for order, pixel, part in split_chunks(table, rows):
            name = "replicated.parquet" if order < 0 else f"chunk-{order}-{pixel}.parquet"
            path = directory / name
            write_chunk_file(part, path)
            overlap = overlap_count(table, part)
            relative = str(path.relative_to(self.root))
            checksum = file_checksum(path)
            files.append(ChunkFile(order, pixel, relative, part.num_rows - overlap, overlap, checksum))
        return files

    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        directory = self.table_dir(table) / f"load{load_id}"
        if directory.exists():
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()

    def drop_table(self, table: CatalogTable) -> None:
        shutil.rmtree(self.table_dir(table), ignore_errors=True)

    def has_table(self, table: CatalogTable) -> bool:
        return self.table_dir(table).exists()

    # answering -----------------------------------------------------------------------------------------

    def relation(self, table: CatalogTable, files: list[str]) -> exp.Expression | None:
        if not files:
            return None
        paths = [exp.Literal.string(f"{self.root}/{f}") for f in files]
        return exp.Table(this=exp.Anonymous(this="read_parquet", expressions=[exp.Array(expressions=paths)]))

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the shard's long-lived connection (macros included), one per calling thread's query."""
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
        try:
            cursor = self.connection()
        except duckdb.IOException as exc:
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc
        for name, table in (tables or {}).items():
            cursor.register(name, table)
        done = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout

        def watch() -> None:
            while not done.wait(CANCEL_POLL):
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
