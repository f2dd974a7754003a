"""Catalog shards: a PostgreSQL database or a DuckDB/Parquet store, behind one small interface.

Backends register themselves by `kind`; the rest of DMS asks `backend_for(shard_config, data_dir)` and never
branches on the kind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import sqlalchemy as sa

from dms.config import ShardConfig, mask_password, parse_postgres_url
from dms.errors import ShardError

_BACKENDS: dict[str, type[ShardBackend]] = {}


class ShardBackend(ABC):
    """How DMS reaches one shard."""

    kind: ClassVar[str]

    def __init__(self, config: ShardConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _BACKENDS[cls.kind] = cls

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def sqlalchemy_url(self) -> sa.URL:
        """The SQLAlchemy URL of the shard's database."""

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


class PostgresShard(ShardBackend):
    kind = "postgres"

    def sqlalchemy_url(self) -> sa.URL:
        assert self.config.url is not None
        return parse_postgres_url(self.config.url, what=f"shard {self.name!r} url")

    def location(self) -> str:
        assert self.config.url is not None
        return mask_password(self.config.url)


class DuckDBShard(ShardBackend):
    kind = "duckdb"

    @property
    def path(self) -> Path:
        assert self.config.path is not None
        path = Path(self.config.path).expanduser()
        return path if path.is_absolute() else self.data_dir / path

    def sqlalchemy_url(self) -> sa.URL:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sa.URL.create("duckdb", database=str(self.path))

    def location(self) -> str:
        return str(self.path)


def backend_for(config: ShardConfig, data_dir: Path) -> ShardBackend:
    """The backend object for a configured shard."""
    try:
        cls = _BACKENDS[config.kind]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise ShardError(
            f"shard {config.name!r} has unknown kind {config.kind!r}; known kinds: {known}"
        ) from None
    return cls(config, data_dir)
