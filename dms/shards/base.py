"""The shard backend interface: how one kind of shard stores a catalog table's chunks (used by the loaders)
and how it answers a per-shard query (used by the engine).

A shard kind is one subpackage of `dms.shards` (``postgres``, ``parquet``) with the same file set:
``backend.py`` (the `ShardBackend` implementation) and ``transfer.py`` (rows in and out of that storage).
The contract every kind keeps is tested by tests/test_shard_contract.py.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa
from sqlglot import exp

from dms.config import ShardConfig
from dms.errors import DMSError

if TYPE_CHECKING:
    from dms.schema.catalog import CatalogTable

REPLICATED_CHUNK = (-1, -1)
"""The (order, pixel) a replicated (unpartitioned) table's rows are stored under."""


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
    """What one load stored of one chunk on one shard (recorded in the registry's chunk_file table)."""

    chunk_order: int
    chunk_id: int
    path: str
    row_count: int
    overlap_row_count: int
    checksum: str | None = None  # of a Parquet file's bytes (dms.query.integrity); None on PostgreSQL


class ShardBackend(ABC):
    """One shard: where it lives, how it stores a table's chunks and how it runs a per-shard query.

    Objects are cheap to make; they open connections lazily and keep them until `close`.
    """

    kind: ClassVar[str]
    """The configuration's `kind` (ShardConfig.kind) this backend serves."""
    dialect: ClassVar[str]
    """The sqlglot dialect per-shard SQL is rendered in."""
    shared_table: ClassVar[bool]
    """Whether one table on the shard holds the rows of every load and of every chunk placed there (replicas
    included), so that a per-shard query must name the committed loads and the chunks it reads."""

    def __init__(self, config: ShardConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    @property
    def name(self) -> str:
        return self.config.name

    # where it lives ------------------------------------------------------------------------------------

    @abstractmethod
    def sqlalchemy_url(self) -> sa.URL:
        """The SQLAlchemy URL of the shard's database (its migrations and schema version live there)."""

    @abstractmethod
    def location(self) -> str:
        """Where the shard lives, for display (passwords masked)."""

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.sqlalchemy_url(), poolclass=sa.pool.NullPool)

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection to the shard, whose schema version is checked first."""
        from dms.schema import SHARD_SCHEMA_VERSION, check_schema_version

        engine = self.engine()
        try:
            with engine.connect() as conn:
                check_schema_version(conn, f"shard {self.name!r}", SHARD_SCHEMA_VERSION)
                yield conn
        finally:
            engine.dispose()

    # storing chunks (loaders) ----------------------------------------------------------------------------

    def write_load(self, table: CatalogTable, load_id: int, rows: pa.Table) -> list[ChunkFile]:
        """Store rows (sorted by _chunk, _healpix_29) of one load; not visible until the load commits.

        Repeating a write of the same load replaces what the first stored (a resumed load)."""
        return self.write_chunks(table, load_id, split_chunks(table, rows))

    @abstractmethod
    def write_chunks(
        self, table: CatalogTable, load_id: int, chunks: Iterable[tuple[int, int, pa.Table]]
    ) -> list[ChunkFile]:
        """Store one load's rows chunk by chunk: (order, pixel, rows sorted by _healpix_29), each chunk once
        (a replicated table: one part under REPLICATED_CHUNK). The parts are consumed one at a time, so a
        load of any size holds one chunk in memory. The same visibility and resume rules as `write_load`."""

    @abstractmethod
    def discard_load(self, table: CatalogTable, load_id: int) -> None:
        """Remove whatever an uncommitted load stored."""

    @abstractmethod
    def drop_table(self, table: CatalogTable) -> None:
        """Remove a table's data (every load)."""

    @abstractmethod
    def has_table(self, table: CatalogTable) -> bool:
        """Whether the shard holds anything under the table's name (before a new table's first load: data
        that is not this table's, which undoing a failed `--create` must leave alone)."""

    # answering (engine) ----------------------------------------------------------------------------------

    @abstractmethod
    def relation(self, table: CatalogTable, files: list[str]) -> exp.Expression | None:
        """The FROM item that reads `table` on this shard, given the registry's files of the chunks a query
        reads (paths as `write_load` returned them); None when the shard holds none of them."""

    def relation_bound(
        self, table: CatalogTable, files: list[str], parameter: str
    ) -> tuple[exp.Expression | None, Any]:
        """`relation` with what depends on the files as the named placeholder `parameter`, and its value
        (None when the relation does not depend on them): one per-shard text then serves every chunk set."""
        return self.relation(table, files), None

    @abstractmethod
    def execute(
        self,
        sql: str,
        *,
        timeout: float | None,
        cancel: threading.Event | None,
        tables: dict[str, pa.Table] | None = None,
        params: dict[str, Any] | None = None,
    ) -> pa.Table:
        """Run one per-shard query (read-only; with small `tables` shipped to the shard; with `params`
        bound to its named placeholders, as sqlglot renders `exp.Placeholder` in the shard's dialect) and
        return its rows.

        Raises ShardQueryError (the query failed), ShardUnavailable (the shard cannot be reached) or
        ShardCancelled (timeout or `cancel` set)."""

    def close(self) -> None:  # noqa: B027 - backends without connections have nothing to release
        """Release connections."""

    def __enter__(self) -> ShardBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def overlap_count(table: CatalogTable, part: pa.Table) -> int:
    """Rows of `part` that are overlap copies of a neighbouring chunk's rows."""
    if not table.partitioned:
        return 0
    return int(pa.compute.sum(part["_overlap"]).as_py() or 0)


def split_chunks(table: CatalogTable, rows: pa.Table) -> Iterator[tuple[int, int, pa.Table]]:
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
