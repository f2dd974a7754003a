"""The read-only role user queries run as, on PostgreSQL shards.

* Role ``dms_reader`` (NOLOGIN; cluster-wide, so created only if missing, as control revision c0005 does):
  the query engine runs every per-shard query after ``SET LOCAL ROLE dms_reader`` in a READ ONLY
  transaction. The migrating user is made a member so that it may switch to it.
* The reader may read the catalog tables already on the shard (every schema but ``dms`` and the system's);
  tables the loader creates later are granted to it as they are created (``PostgresStore``).
* DuckDB shards only record the new version (their queries are confined by DuckDB settings instead).

Revision ID: s0002
Revises: s0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "s0002"
down_revision: str | None = "s0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARD_SCHEMA_VERSION = "1.1.0"
PREVIOUS_VERSION = "1.0.0"
READER = "dms_reader"
CATALOG_SCHEMAS = (
    "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('dms', 'information_schema') "
    "AND nspname NOT LIKE 'pg\\_%'"
)


def _set_version(version: str) -> None:
    op.execute(
        sa.text("UPDATE dms.schema_info SET value = :v WHERE key = 'schema_version'").bindparams(v=version)
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READER}') THEN
                    CREATE ROLE {READER} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
            END $$"""
        )
        op.execute(
            f"""DO $$ BEGIN
                IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                    EXECUTE format('GRANT {READER} TO %I', current_user);
                END IF;
            END $$"""
        )
        op.execute(
            f"""DO $$ DECLARE s name; BEGIN
                FOR s IN {CATALOG_SCHEMAS} LOOP
                    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {READER}', s);
                    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO {READER}', s);
                END LOOP;
            END $$"""
        )
        op.execute(f"REVOKE ALL ON SCHEMA dms FROM {READER}")
    _set_version(SHARD_SCHEMA_VERSION)


def downgrade() -> None:
    _set_version(PREVIOUS_VERSION)
    if op.get_bind().dialect.name != "postgresql":
        return
    # The role is shared by every database of the server: drop only this database's grants, then the role
    # itself if no other database still uses it.
    op.execute(f"DROP OWNED BY {READER}")
    op.execute(
        f"""DO $$ BEGIN
            DROP ROLE IF EXISTS {READER};
        EXCEPTION WHEN dependent_objects_still_exist THEN NULL;
        END $$"""
    )
