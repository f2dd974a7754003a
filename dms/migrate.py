"""Schema migrations of a whole deployment: the control database and every shard, with alembic.

Revisions live in `migrations/versions/control` (branch `control`) and `migrations/versions/shard` (branch
`shard`, applied to every PostgreSQL and DuckDB shard). `upgrade`, `downgrade` and `current` are what
`dms db upgrade|downgrade|current` run.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.ddl.postgresql import PostgresqlImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from dms.deployment import Deployment
from dms.errors import DMSError

log = logging.getLogger(__name__)

CONTROL = "control"
SHARD = "shard"


class DuckDBImpl(PostgresqlImpl):
    """Alembic's DDL operations for DuckDB shards (DuckDB speaks the PostgreSQL dialect of DDL)."""

    __dialect__ = "duckdb"
    transactional_ddl = True


class MigrationError(DMSError):
    """A migration could not be planned or applied."""


@dataclass(frozen=True)
class Target:
    """One database that migrations apply to."""

    label: str  # "control" or "shard NAME"
    branch: str
    engine_factory: Callable[[], sa.Engine]


def alembic_config() -> Config:
    """An alembic Config for the installed migrations, independent of the working directory."""
    root = importlib.resources.files("dms.migrations")
    cfg = Config()
    cfg.set_main_option("script_location", str(root))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option(
        "version_locations",
        os.pathsep.join(str(root / "versions" / branch) for branch in (CONTROL, SHARD)),
    )
    return cfg


def targets(deployment: Deployment) -> list[Target]:
    """The control database first, then each shard in configuration order."""
    result = [Target(CONTROL, CONTROL, deployment.engine)]
    for shard in deployment.shards():
        result.append(Target(f"shard {shard.name}", SHARD, shard.engine))
    return result


def upgrade(deployment: Deployment, revision: str = "head") -> list[tuple[str, str | None, str | None]]:
    """Bring every database to `revision` (default head); returns (database, before, after) per database."""
    return _apply(deployment, revision, command.upgrade)


def downgrade(deployment: Deployment, revision: str) -> list[tuple[str, str | None, str | None]]:
    """Take every database down to `revision` ('base' removes all DMS tables; shards first)."""
    return _apply(deployment, revision, command.downgrade, reverse=True)


def current(deployment: Deployment) -> list[tuple[str, str | None]]:
    """The revision each database is at (None: not migrated)."""
    return [(t.label, _current(t)) for t in targets(deployment)]


def heads() -> dict[str, str]:
    """The head revision of each branch."""
    script = ScriptDirectory.from_config(alembic_config())
    return {branch: script.get_revision(f"{branch}@head").revision for branch in (CONTROL, SHARD)}


def _apply(
    deployment: Deployment,
    revision: str,
    action: Callable[[Config, str], None],
    reverse: bool = False,
) -> list[tuple[str, str | None, str | None]]:
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    plan = targets(deployment)
    if reverse:
        plan = plan[1:] + plan[:1]  # shards before the control database that places chunks on them
    results = []
    for target in plan:
        spec = _branch_revision(script, target.branch, revision)
        if spec is None:
            continue
        before = _current(target)
        engine = target.engine_factory()
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                action(cfg, spec)
        except CommandError as exc:
            raise MigrationError(f"{target.label}: {exc}") from exc
        finally:
            cfg.attributes.pop("connection", None)
        after = _current(target)
        log.info("%s: %s -> %s", target.label, before or "base", after or "base")
        results.append((target.label, before, after))
    return results


def _branch_revision(script: ScriptDirectory, branch: str, revision: str) -> str | None:
    """Translate a user's target into this branch's terms; None if the revision is on another branch."""
    if revision in ("head", "heads", "base") or revision.startswith(("+", "-")):
        target = "heads" if revision == "heads" else revision
        return f"{branch}@{target}"
    try:
        found = script.get_revision(revision)
    except CommandError as exc:
        raise MigrationError(f"unknown revision {revision!r}: {exc}") from exc
    if found is None:
        raise MigrationError(f"unknown revision {revision!r}")
    return revision if branch in found.branch_labels or _on_branch(script, found.revision, branch) else None


def _on_branch(script: ScriptDirectory, revision: str, branch: str) -> bool:
    return any(r.revision == revision for r in script.iterate_revisions(f"{branch}@head", "base"))


def _current(target: Target) -> str | None:
    engine = target.engine_factory()
    try:
        with engine.connect() as conn:
            heads = MigrationContext.configure(conn).get_current_heads()
    finally:
        engine.dispose()
    return heads[0] if heads else None
