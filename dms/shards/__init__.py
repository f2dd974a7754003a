"""Catalog shards: a PostgreSQL database or a DuckDB/Parquet store, behind one interface (`ShardBackend`).

Each kind is a subpackage with the same file set (``backend.py``, ``transfer.py``), registered here by the
configuration's `kind`, as alembic registers its dialect implementations by name. The rest of DMS asks
`backend_for(shard_config, data_dir)` and never branches on the kind. The kinds are imported when first asked
for: they use the query engine's reader role and the loaders' partitioning, which import the deployment.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dms.config import ShardConfig
from dms.errors import ShardError
from dms.shards.base import (
    REPLICATED_CHUNK,
    ChunkFile,
    ShardBackend,
    ShardCancelled,
    ShardQueryError,
    ShardUnavailable,
    ShardWriteError,
)

KINDS: dict[str, str] = {
    "postgres": "dms.shards.postgres.backend:PostgresShard",
    "duckdb": "dms.shards.parquet.backend:DuckDBShard",
}
"""Shard kind -> "module:class" of its backend."""

__all__ = [
    "KINDS",
    "REPLICATED_CHUNK",
    "ChunkFile",
    "ShardBackend",
    "ShardCancelled",
    "ShardQueryError",
    "ShardUnavailable",
    "ShardWriteError",
    "backend_class",
    "backend_for",
]


def backend_class(kind: str) -> type[ShardBackend]:
    """The backend class of a shard kind, or a ShardError listing the known kinds."""
    try:
        module_name, class_name = KINDS[kind].split(":")
    except KeyError:
        raise ShardError(f"unknown shard kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, ShardBackend) and cls.kind == kind
    return cls


def backend_for(config: ShardConfig, data_dir: Path) -> ShardBackend:
    """The backend object for a configured shard."""
    if config.kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        raise ShardError(f"shard {config.name!r} has unknown kind {config.kind!r}; known kinds: {known}")
    return backend_class(config.kind)(config, data_dir)
