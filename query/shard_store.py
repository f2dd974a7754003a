"""Deprecated: the shard backends moved to `dms.shards` (one `ShardBackend` per kind, which both stores chunks
and answers per-shard queries). These names remain for code written against the old module."""

from __future__ import annotations

from dms.shards import (
    REPLICATED_CHUNK,
    ChunkFile,
    ShardBackend,
    ShardCancelled,
    ShardQueryError,
    ShardUnavailable,
    ShardWriteError,
)
from dms.shards.parquet.backend import DuckDBShard
from dms.shards.parquet.transfer import LOCKED_DOWN, ROW_GROUP_ROWS, confine
from dms.shards.postgres.backend import PostgresShard, physical_name
from dms.shards.postgres.transfer import PostgresConnection

ShardStore = ShardBackend
ParquetStore = DuckDBShard
PostgresStore = PostgresShard

__all__ = [
    "LOCKED_DOWN",
    "REPLICATED_CHUNK",
    "ROW_GROUP_ROWS",
    "ChunkFile",
    "ParquetStore",
    "PostgresConnection",
    "PostgresStore",
    "ShardCancelled",
    "ShardQueryError",
    "ShardStore",
    "ShardUnavailable",
    "ShardWriteError",
    "confine",
    "physical_name",
    "store_for",
]


def store_for(backend: ShardBackend) -> ShardBackend:
    """The backend itself (stores and backends are one object now)."""
    return backend
