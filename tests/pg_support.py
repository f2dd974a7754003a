"""Databases on the session's PostgreSQL server (pgserver): created and dropped with their names quoted by
psycopg.sql.Identifier, and deployments' databases copied from ones migrated once per session.

Running every control migration takes from several seconds to half a minute on a busy 2-core machine, and
installing the UDFs into a shard a few seconds more, while most suites only need databases at head. So
`control_database` and `shard_database` copy a template database migrated once (CREATE DATABASE ...
TEMPLATE, a file copy), and `seed_default_shard` copies a migrated shard0.duckdb into a new deployment. The
deployment's own `migrate.upgrade` then finds them at head and migrates only the shards added since. The
migrations themselves run from base in the suites that test them (test_migrations.py, test_deployment.py,
the backfill tests of test_obscore_regions.py and test_catalog_loads_visibility.py, test_schema_dms.py).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from dms.deployment import Deployment


@dataclass(frozen=True)
class _Templates:
    control: str  # a control database at head
    shard: str  # a PostgreSQL shard database at head
    shard0: Path  # a DuckDB shard file at head (the default shard of a new deployment)


# The templates of each server (by admin URI), made on first use.
_templates: dict[str, _Templates] = {}


def create_database(server: Any, prefix: str = "t", *, template: str | None = None) -> str:
    """Create a fresh, uniquely named database on `server` (a copy of `template` if given); its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(statement)
    return name


def drop_database(server: Any, *names: str) -> None:
    """Drop databases of `server`, closing their connections first; a missing one is not an error."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def control_database(server: Any, prefix: str = "t") -> str:
    """A fresh database already at the control branch's head (a copy of the session's template); its name."""
    return create_database(server, prefix, template=_session_templates(server).control)


def shard_database(server: Any, prefix: str = "t") -> str:
    """A fresh database already at the shard branch's head, for a PostgreSQL shard; its name."""
    return create_database(server, prefix, template=_session_templates(server).shard)


def seed_default_shard(deployment: Deployment, server: Any) -> None:
    """Put a copy of the session's migrated default DuckDB shard into a new deployment (before its first
    `migrate.upgrade`), instead of installing the DuckDB macros into it again."""
    from dms.shards.parquet.backend import DuckDBShard

    (shard,) = (s for s in deployment.shards() if s.name == "shard0")
    assert isinstance(shard, DuckDBShard), shard
    target = shard.path
    assert not target.exists(), f"{target} exists: seed the default shard of a new deployment only"
    shutil.copyfile(_session_templates(server).shard0, target)


@contextmanager
def database(server: Any, prefix: str = "t", *, migrated: bool = False) -> Iterator[str]:
    """A fresh database for the block (with `migrated`, at control head); yields its URI, then drops it."""
    name = control_database(server, prefix) if migrated else create_database(server, prefix)
    try:
        yield str(server.get_uri(name))
    finally:
        drop_database(server, name)


def _session_templates(server: Any) -> _Templates:
    from dms import migrate
    from dms.config import ShardConfig
    from dms.deployment import Deployment

    admin = str(server.get_uri())
    if admin not in _templates:
        control = create_database(server, "dms_template")
        shard = create_database(server, "dms_template_shard")
        directory = Path(tempfile.mkdtemp(prefix="dms-templates-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        deployment = Deployment.create(directory / "dep", database_url=server.get_uri(control))
        try:
            deployment.add_shard(ShardConfig(name="pg", kind="postgres", url=server.get_uri(shard)))
            migrate.upgrade(deployment)
        finally:
            deployment.dispose()  # a template cannot be copied while a session is connected to it
        _templates[admin] = _Templates(control, shard, directory / "dep" / "catalog" / "shard0.duckdb")
    return _templates[admin]
