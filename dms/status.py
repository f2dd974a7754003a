"""What `dms status` reports: the deployment, its servers, schema versions and shards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from dms.deployment import Deployment, first_line
from dms.errors import DMSError
from dms.schema import SCHEMA_VERSION, SHARD_SCHEMA_VERSION, read_schema_version


@dataclass
class DatabaseStatus:
    """One database (control or shard) as seen right now."""

    name: str
    kind: str
    location: str
    reachable: bool
    revision: str | None = None
    head: str | None = None
    schema_version: str | None = None
    expected_version: str | None = None
    server_version: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    tables: int | None = None
    error: str | None = None

    @property
    def up_to_date(self) -> bool:
        return self.reachable and self.revision == self.head and self.schema_version == self.expected_version


@dataclass
class DeploymentStatus:
    data_dir: str
    mode: str
    server: str  # "running", "stopped" or "external"
    control: DatabaseStatus
    shards: list[DatabaseStatus]

    def to_dict(self) -> dict[str, object]:
        result = asdict(self)
        result["control"]["up_to_date"] = self.control.up_to_date
        for shard, shard_dict in zip(self.shards, result["shards"], strict=True):
            shard_dict["up_to_date"] = shard.up_to_date
        return result


def collect(deployment: Deployment) -> DeploymentStatus:
    """Inspect a deployment without changing it (a stopped embedded server is left stopped)."""
    from dms.migrate import CONTROL, SHARD, heads

    head = heads()
    embedded = deployment.embedded
    server = "external" if embedded is None else ("running" if embedded.is_running() else "stopped")
    control = DatabaseStatus(
        "control",
        "postgres",
        deployment.describe_control(),
        False,
        head=head[CONTROL],
        expected_version=SCHEMA_VERSION,
    )
    if server != "stopped":
        _inspect(control, deployment.engine, postgres=True)
    else:
        control.error = "embedded server stopped (start it with `dms start`)"
    shards = []
    for shard in deployment.shards():
        status = DatabaseStatus(
            shard.name,
            shard.kind,
            shard.location(),
            False,
            head=head[SHARD],
            expected_version=SHARD_SCHEMA_VERSION,
        )
        _inspect(status, shard.engine, postgres=shard.kind == "postgres")
        shards.append(status)
    return DeploymentStatus(str(deployment.data_dir), deployment.config.mode, server, control, shards)


def _inspect(status: DatabaseStatus, engine_factory: Callable[[], sa.Engine], *, postgres: bool) -> None:
    from alembic.runtime.migration import MigrationContext

    try:
        engine = engine_factory()
        try:
            with engine.connect() as conn:
                status.reachable = True
                current = MigrationContext.configure(conn).get_current_heads()
                status.revision = current[0] if current else None
                status.schema_version = read_schema_version(conn)
                if postgres:
                    status.server_version = (
                        "PostgreSQL " + conn.execute(sa.text("SHOW server_version")).scalar_one()
                    )
                    status.extensions = dict(
                        (row[0], row[1])
                        for row in conn.execute(sa.text("SELECT extname, extversion FROM pg_extension"))
                    )
                    status.tables = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                        )
                    ).scalar_one()
                else:
                    status.server_version = "DuckDB " + str(
                        conn.execute(sa.text("SELECT version()")).scalar_one()
                    )
                    status.tables = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema <> 'information_schema'"
                        )
                    ).scalar_one()
        finally:
            engine.dispose()
    except (sa.exc.SQLAlchemyError, DMSError, OSError) as exc:
        status.error = first_line(exc)
