"""A DuckDB/Parquet shard: a directory of Parquet files (one per chunk and load, under
``<path without suffix>/<schema>/<table>/load<id>/``) beside a DuckDB database file that holds the shard's
schema version and UDF macros; queried by one long-lived, read-only, locked-down DuckDB connection (a cursor
per query)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
)
from dms.shards.parquet.transfer import LOCKED_DOWN, confine, write_chunk_file

if TYPE_CHECKING:
    from dms.schema.catalog import CatalogTable

# the copy it warns of is of a small result (bound parameters are the fast path's)
warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)

WRITE_THREADS = 2
"""Chunk files a load writes at the same time."""
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

    def write_chunks(
        self, table: CatalogTable, load_id: int, chunks: Iterable[tuple[int, int, pa.Table]]
    ) -> list[ChunkFile]:
        """Each chunk's file, WRITE_THREADS at a time (Parquet encoding and compression release the GIL), with
        at most that many chunks waiting, so memory stays bounded."""
        directory = self.table_dir(table) / f"load{load_id}"
        directory.mkdir(parents=True, exist_ok=True)
        key = table.id_column or table.director_key_column
        bloom = (key,) if key else ()

        def write(order: int, pixel: int, part: pa.Table) -> ChunkFile:
            name = "replicated.parquet" if order < 0 else f"chunk-{order}-{pixel}.parquet"
            path = directory / name
            checksum = write_chunk_file(part, path, bloom)
            overlap = overlap_count(table, part)
            relative = str(path.relative_to(self.root))
            return ChunkFile(order, pixel, relative, part.num_rows - overlap, overlap, checksum)

        files: list[ChunkFile] = []
        with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix=f"dms-write-{self.name}") as pool:
            pending: deque[Future[ChunkFile]] = deque()
            for order, pixel, part in chunks:
                if len(pending) >= WRITE_THREADS:
                    files.append(pending.popleft().result())
                pending.append(pool.submit(write, order, pixel, part))
            files.extend(f.result() for f in pending)
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

    def relation_bound(
        self, table: CatalogTable, files: list[str], parameter: str
    ) -> tuple[exp.Expression | None, Any]:
        if not files:
            return None, None
        relation = exp.Table(
            this=exp.Anonymous(this="read_parquet", expressions=[exp.Placeholder(this=parameter)])
        )
        return relation, [f"{self.root}/{f}" for f in files]

    def connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the shard's long-lived connection (macros included), one per calling thread's query."""
        with self._lock:
            if self._conn is None:
                self._conn = duckdb.connect(str(self.database), read_only=True, config=LOCKED_DOWN)
                # Parquet footers kept between queries (DuckDB re-reads a file whose modification time
                # changed): a small query no longer reads the metadata of every file it touches. Damaged
                # files are caught before any read (dms.query.integrity).
                with contextlib.suppress(duckdb.Error):  # locked: set by the process's first connection
                    self._conn.execute("SET GLOBAL parquet_metadata_cache = true")
                confine(self._conn, [self.root])
            return self._conn.cursor()

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
            cursor = self.connection()
        except duckdb.IOException as exc:
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc
        for name, table in (tables or {}).items():
            cursor.register(name, table)
        deadline = None if timeout is None else time.monotonic() + timeout
        watched = cancel is not None or deadline is not None
        if watched:
            _WATCHDOG.watch(cursor, deadline, cancel)
        try:
            if params:  # the DB-API call binds parameters at half the cost of `sql(..., params=...)`
                return cursor.execute(sql, params).to_arrow_table()
            return cursor.sql(sql).to_arrow_table()
        except duckdb.InterruptException as exc:
            raise ShardCancelled(f"shard {self.name!r}: query cancelled") from exc
        except duckdb.IOException as exc:
            raise ShardUnavailable(self.name, str(exc).splitlines()[0]) from exc
        except duckdb.Error as exc:
            raise ShardQueryError(self.name, str(exc).splitlines()[0]) from exc
        finally:
            if watched:
                _WATCHDOG.forget(cursor)
            cursor.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _Watchdog:
    """One thread for every running query of the process's DuckDB shards: it interrupts a query whose
    deadline passed or whose cancel event is set (a thread per query cost more than a small query)."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[duckdb.DuckDBPyConnection, float | None, threading.Event | None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(
        self, cursor: duckdb.DuckDBPyConnection, deadline: float | None, cancel: threading.Event | None
    ) -> None:
        with self._lock:
            self._running[id(cursor)] = (cursor, deadline, cancel)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dms-duckdb-watchdog", daemon=True)
                self._thread.start()

    def forget(self, cursor: duckdb.DuckDBPyConnection) -> None:
        with self._lock:  # after this no interrupt reaches the cursor (it is closed next)
            self._running.pop(id(cursor), None)

    def _loop(self) -> None:
        while True:
            time.sleep(CANCEL_POLL)
            now = time.monotonic()
            with self._lock:
                if not self._running:  # idle: the next watched query starts another
                    self._thread = None
                    return
                for key, (cursor, deadline, cancel) in list(self._running.items()):
                    if (cancel is not None and cancel.is_set()) or (deadline is not None and now > deadline):
                        cursor.interrupt()
                        del self._running[key]


_WATCHDOG = _Watchdog()
