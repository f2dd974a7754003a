"""A deployment: a data directory holding its configuration, the control database and the catalog shards.

`Deployment.create` is what `dms init` runs; `Deployment.open` is what every other command runs.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql

from dms.config import (
    CONFIG_FILE,
    ENV_DATABASE_URL,
    DeploymentConfig,
    ShardConfig,
    default_data_dir,
    load_config,
    mask_password,
    parse_postgres_url,
    save_config,
)
from dms.embedded import PGDATA_DIR, EmbeddedServer
from dms.errors import DeploymentError, DeploymentExistsError
from dms.shards import ShardBackend, backend_for

log = logging.getLogger(__name__)

DEFAULT_SHARD = ShardConfig(name="shard0", kind="duckdb", path="catalog/shard0.duckdb")


@dataclass
class Deployment:
    """An initialized deployment. Engines are created lazily and reused."""

    data_dir: Path
    config: DeploymentConfig
    _engine: sa.Engine | None = field(default=None, repr=False)

    # ---- creating and finding deployments -------------------------------------------------------------

    @classmethod
    def create(cls, data_dir: Path | None = None, *, database_url: str | None = None) -> Deployment:
        """Create a deployment in `data_dir`; never touches an existing one.

        With `database_url` (or DMS_DATABASE_URL) the control database is that external PostgreSQL;
        otherwise an embedded PostgreSQL is started inside the data directory.
        """
        data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        config_path = data_dir / CONFIG_FILE
        if config_path.exists():
            existing = load_config(config_path)
            raise DeploymentExistsError(
                f"a deployment already exists in {data_dir} ({existing.mode}, created "
                f"{existing.created_at:%Y-%m-%d %H:%M} UTC); it was left unchanged. "
                "Use `dms status` to inspect it, or choose another --data-dir."
            )
        _ensure_writable(data_dir)
        url = database_url or os.environ.get(ENV_DATABASE_URL)
        if url:
            config = DeploymentConfig(mode="external", database_url=url, shards=[DEFAULT_SHARD])
        else:
            config = DeploymentConfig(mode="embedded", shards=[DEFAULT_SHARD])
        deployment = cls(data_dir, config)
        if config.mode == "embedded":
            deployment._create_embedded_database()
        else:
            deployment.check_connection()
        (data_dir / "catalog").mkdir(exist_ok=True)
        # The configuration is written last: an interrupted `dms init` leaves no deployment behind and can
        # simply be run again (an embedded server it created is reused).
        save_config(config, config_path)
        log.info("created a %s deployment in %s", config.mode, data_dir)
        return deployment

    @classmethod
    def open(cls, data_dir: Path | None = None) -> Deployment:
        """Open the deployment in `data_dir` (default: DMS_DATA_DIR or the per-user data directory)."""
        data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        config_path = data_dir / CONFIG_FILE
        if not config_path.exists():
            raise DeploymentError(
                f"no deployment in {data_dir} (no {CONFIG_FILE}); create one with `dms init`"
            )
        return cls(data_dir, load_config(config_path))

    # ---- the control database ------------------------------------------------------------------------

    @property
    def embedded(self) -> EmbeddedServer | None:
        """The embedded server, or None for an external deployment."""
        return EmbeddedServer(self.data_dir / PGDATA_DIR) if self.config.mode == "embedded" else None

    def control_url(self) -> sa.URL:
        """SQLAlchemy URL of the control database; starts the embedded server if it is not running."""
        if self.embedded is None:
            url = os.environ.get(ENV_DATABASE_URL) or self.config.database_url
            assert url is not None  # guaranteed by DeploymentConfig validation
            return parse_postgres_url(url)
        return parse_postgres_url(self.embedded.uri(self.config.database_name), what="embedded server URL")

    def describe_control(self) -> str:
        """Where the control database is, for display (no password, does not start anything)."""
        if self.embedded is None:
            url = os.environ.get(ENV_DATABASE_URL) or self.config.database_url or ""
            return mask_password(url)
        return f"embedded PostgreSQL in {self.embedded.pgdata} (database {self.config.database_name})"

    def engine(self) -> sa.Engine:
        """The control database engine (one pool per Deployment object)."""
        if self._engine is None:
            self._engine = sa.create_engine(
                self.control_url(), pool_pre_ping=True, connect_args={"connect_timeout": 10}
            )
        return self._engine

    def check_connection(self) -> None:
        """Connect once to the control database, raising DeploymentError with the reason if it fails."""
        with self._open_connection():
            pass

    @contextmanager
    def connect(self, *, check_schema: bool = True) -> Iterator[sa.Connection]:
        """A pooled connection to the control database, whose schema version is checked first."""
        with self._open_connection() as conn:
            if check_schema:
                from dms.schema import check_schema_version

                check_schema_version(conn, "the control database")
            yield conn

    def _open_connection(self) -> sa.Connection:
        try:
            return self.engine().connect()
        except sa.exc.OperationalError as exc:
            raise DeploymentError(
                f"cannot connect to the control database {self.describe_control()}: {first_line(exc)}"
            ) from exc

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _create_embedded_database(self) -> None:
        assert self.embedded is not None
        admin_uri = self.embedded.start()
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.config.database_name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.config.database_name)))

    # ---- shards -------------------------------------------------------------------------------------

    def shards(self) -> list[ShardBackend]:
        return [backend_for(s, self.data_dir) for s in self.config.shards]

    def add_shard(self, shard: ShardConfig) -> ShardBackend:
        """Register a shard in deployment.yaml (its schema is created by `dms db upgrade`)."""
        if any(s.name == shard.name for s in self.config.shards):
            raise DeploymentError(f"a shard named {shard.name!r} is already registered")
        self.config = self.config.model_copy(update={"shards": [*self.config.shards, shard]})
        save_config(self.config, self.data_dir / CONFIG_FILE)
        return backend_for(shard, self.data_dir)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop the embedded server; returns whether one was running."""
        self.dispose()
        return self.embedded.stop() if self.embedded is not None else False


def first_line(exc: BaseException) -> str:
    """The first line of a database error's message (drivers append hints and context below it)."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def _ensure_writable(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".dms-write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise DeploymentError(
            f"data directory {data_dir} is not writable ({exc.strerror or exc}); "
            "choose another with --data-dir or DMS_DATA_DIR"
        ) from exc
