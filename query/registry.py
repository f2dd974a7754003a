"""What the engine needs to know about the catalog, read from the control database and cached.

The cache is keyed by the registry generation (`dms.catalog_generation`, a counter that triggers bump in the
same transaction as every load commit, table change, chunk placement and chunk file), read on every query with
one cheap statement: a committed change is seen by the next query whatever order loads commit in, and a
running load never is (queries read only the loads the snapshot lists as committed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa

from dms.deployment import Deployment
from dms.query.director import DirectorIndex
from dms.schema.catalog import CatalogTable, list_tables

log = logging.getLogger(__name__)
PUBLIC_CONTROL_SCHEMAS = ("ivoa", "tap_schema", "alerts")
GENERATION_CONNECT_TIMEOUT = 10
"""Seconds to wait for the registry's own connection to the control database."""


@dataclass
class TableChunks:
    """The registered chunks of a table, sorted by order-29 range, and where their data is."""

    orders: np.ndarray
    pixels: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    shard: np.ndarray  # primary shard of each chunk
    files: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)  # (shard, order, pixel)
    replicas: dict[tuple[int, int], list[str]] = field(default_factory=dict)  # (order, pixel) -> shards
    replicated_files: dict[str, list[str]] = field(default_factory=dict)  # shard -> files
    checksums: dict[tuple[str, str], str] = field(default_factory=dict)  # (shard, file) -> recorded checksum

    def select(self, ranges: np.ndarray | None) -> np.ndarray:
        """Indexes of the chunks that intersect the ranges (all when None)."""
        if ranges is None:
            return np.arange(len(self.lo))
        if len(ranges) == 0 or len(self.lo) == 0:
            return np.zeros(0, np.int64)
        first = np.searchsorted(ranges[:, 1], self.lo, side="left")
        hit = first < len(ranges)
        hit[hit] = ranges[first[hit], 0] <= self.hi[hit]
        return np.flatnonzero(hit)


@dataclass
class Snapshot:
    generation: int
    tables: dict[str, CatalogTable]
    chunks: dict[str, TableChunks]
    committed_loads: dict[str, list[int]]  # table -> its committed loads: the only rows queries may read
    control_tables: dict[tuple[str, str], dict[str, str]]
    index_files: dict[str, list[str]]
    _indexes: dict[str, DirectorIndex] = field(default_factory=dict)
    _index_lock: threading.Lock = field(default_factory=threading.Lock)

    def chunks_of_ids(self, director: str, ids: list[int]) -> set[int]:
        """The chunks (NUNIQ) holding the given object ids of a director table, from its director index
        on disk (only its row-group statistics are kept, per snapshot; see `dms.query.director`); of a
        child table, the chunks of its orphans with those keys."""
        with self._index_lock:
            if director not in self._indexes:
                self._indexes[director] = DirectorIndex(self.index_files.get(director, []))
            index = self._indexes[director]
        return index.chunks_of(ids)


GENERATION_SQL = "SELECT generation FROM dms.catalog_generation WHERE id = 1"


def _generation(conn: sa.Connection) -> int:
    """The registry generation: bumped by triggers in every transaction that changes the registry."""
    row = conn.execute(sa.text(GENERATION_SQL))
    return int(row.scalar_one())


class Registry:
    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._generation_lock = threading.Lock()
        self._generation_conn: psycopg.Connection[Any] | None = None

    def generation(self) -> int | None:
        """The registry generation, read on a psycopg connection of its own (autocommit, the statement
        prepared: one round trip, no pool checkout or ping); None when that connection cannot answer (the
        caller then reads it the usual way). It is never one of the deployment's pooled connections, so
        the pool never hands out a connection in autocommit (SQLAlchemy's savepoints need a transaction)."""
        with self._generation_lock:
            for _ in range(2):  # a connection the server dropped is replaced once
                try:
                    if self._generation_conn is None:
                        url = self.deployment.control_url().set(drivername="postgresql")
                        self._generation_conn = psycopg.connect(
                            url.render_as_string(hide_password=False),
                            autocommit=True,
                            connect_timeout=GENERATION_CONNECT_TIMEOUT,
                        )
                    row = self._generation_conn.execute(GENERATION_SQL, prepare=True).fetchone()
                    assert row is not None, "dms.catalog_generation has no row"
                    return int(row[0])
                except Exception:  # any failure: drop the connection, read it the usual way
                    log.debug("registry generation connection failed", exc_info=True)
                    self._drop_generation_conn()
            return None

    def _drop_generation_conn(self) -> None:
        if self._generation_conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._generation_conn.close()
            self._generation_conn = None

    def close(self) -> None:
        with self._generation_lock:
            self._drop_generation_conn()

    def snapshot(self) -> Snapshot:
        generation = self.generation()
        with self._lock:
            if self._snapshot is not None and self._snapshot.generation == generation:
                return self._snapshot
        with self.deployment.connect(check_schema=False) as conn:
            generation = _generation(conn)
            with self._lock:
                if self._snapshot is not None and self._snapshot.generation == generation:
                    return self._snapshot
            # One REPEATABLE READ transaction: every table below is read as of one moment, which is no
            # earlier than the generation just read (so the snapshot is never older than its key).
            conn.rollback()
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            generation = _generation(conn)
            snapshot = self._load(conn, generation)
            conn.rollback()
        with self._lock:
            if self._snapshot is None or self._snapshot.generation <= snapshot.generation:
                self._snapshot = snapshot
        return snapshot

    def _load(self, conn: sa.Connection, generation: int) -> Snapshot:
        tables = {t.name: t for t in list_tables(conn)}
        chunks = {name: self._chunks(conn, name) for name, t in tables.items()}
        committed: dict[str, list[int]] = defaultdict(list)
        index_files: dict[str, list[str]] = defaultdict(list)
        for load_id, table, index_path in conn.execute(
            sa.text(
                "SELECT load_id, table_name, index_path FROM dms.catalog_load WHERE state = 'committed' "
                "ORDER BY load_id"
            )
        ):
            committed[table].append(int(load_id))
            if index_path:
                index_files[table].append(str(self.deployment.data_dir / index_path))
        control: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for schema, table, column, datatype in conn.execute(
            sa.text(
                "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ANY(:s) ORDER BY table_schema, table_name, ordinal_position"
            ),
            {"s": list(PUBLIC_CONTROL_SCHEMAS)},
        ):
            control[(schema.lower(), table.lower())][column] = datatype
        return Snapshot(generation, tables, chunks, dict(committed), dict(control), dict(index_files))

    def _chunks(self, conn: sa.Connection, table: str) -> TableChunks:
        rows = conn.execute(
            sa.text(
                "SELECT c.chunk_order, c.chunk_id, c.healpix_29_min, c.healpix_29_max, r.shard "
                "FROM dms.chunk c JOIN dms.chunk_replica r USING (table_name, chunk_order, chunk_id) "
                "WHERE c.table_name = :t AND r.is_primary ORDER BY c.healpix_29_min"
            ),
            {"t": table},
        ).all()
        result = TableChunks(
            orders=np.array([r[0] for r in rows], np.int64),
            pixels=np.array([r[1] for r in rows], np.int64),
            lo=np.array([r[2] for r in rows], np.int64),
            hi=np.array([r[3] for r in rows], np.int64),
            shard=np.array([r[4] for r in rows], dtype=object),
        )
        for order, pixel, shard in conn.execute(
            sa.text(
                "SELECT chunk_order, chunk_id, shard FROM dms.chunk_replica WHERE table_name = :t "
                "AND state = 'ready' ORDER BY chunk_order, chunk_id, NOT is_primary, shard"
            ),
            {"t": table},
        ):
            result.replicas.setdefault((int(order), int(pixel)), []).append(str(shard))
        for shard, order, pixel, path, checksum in conn.execute(
            sa.text(
                "SELECT f.shard, f.chunk_order, f.chunk_id, f.path, f.checksum FROM dms.chunk_file f "
                "JOIN dms.catalog_load l "
                "USING (load_id) WHERE f.table_name = :t AND l.state = 'committed' ORDER BY f.load_id"
            ),
            {"t": table},
        ):
            if checksum:
                result.checksums[(str(shard), str(path))] = str(checksum)
            if order < 0:
                result.replicated_files.setdefault(shard, []).append(path)
            else:
                result.files.setdefault((shard, int(order), int(pixel)), []).append(path)
        return result
