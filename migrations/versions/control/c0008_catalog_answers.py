"""Catalog answers: catalog_table.like_table, chunk_file.checksum, the registry generation (schema 1.6.0).

- `like_table` takes over the `--like` link that loads used to keep in the free-text description ("layout like
  X"): existing rows whose description is that text get the link in the new column and no description.
- `chunk_file.checksum` records each Parquet chunk file's sha256 at load (NULL for older files).
- `catalog_generation` is one counter that statement triggers bump in the same transaction as every change to
  catalog_table, catalog_column, catalog_load, chunk, chunk_replica and chunk_file, so a cached registry keyed
  on it cannot miss a load that commits after a later-numbered one.

Revision ID: c0008
Revises: c0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version

revision: str = "c0008"
down_revision: str | None = "c0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIKE_PREFIX = "layout like "
#: Tables whose changes alter what catalog queries see (and so bump the generation).
WATCHED = ("catalog_table", "catalog_column", "catalog_load", "chunk", "chunk_replica", "chunk_file")
TRIGGERS = tuple(
    (
        sa.text(
            "CREATE TRIGGER " + table + "_bump_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            "ON dms." + table + " FOR EACH STATEMENT EXECUTE FUNCTION dms.bump_catalog_generation()"
        ),
        sa.text("DROP TRIGGER IF EXISTS " + table + "_bump_generation ON dms." + table),
    )
    for table in WATCHED  # fixed names of this module, never input
)
BUMP_FUNCTION = """
CREATE FUNCTION dms.bump_catalog_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE dms.catalog_generation SET generation = generation + 1, changed_at = now() WHERE id = 1;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.add_column(
        "catalog_table",
        sa.Column(
            "like_table",
            sa.String(length=128),
            nullable=True,
            comment="The table (catalog_table.name) whose chunk layout this table copies (`dms load --like`), "
            "so the two can be cross-matched chunk by chunk. NULL when the table has its own layout.",
        ),
        schema="dms",
    )
    op.execute(
        sa.text(
            "UPDATE dms.catalog_table SET like_table = CASE WHEN position('.' IN substr(description, :n)) > 0 "
            "THEN substr(description, :n) ELSE 'catalog.' || substr(description, :n) END, description = NULL "
            "WHERE description LIKE :p"
        ).bindparams(n=len(LIKE_PREFIX) + 1, p=LIKE_PREFIX + "%")
    )
    op.add_column(
        "chunk_file",
        sa.Column(
            "checksum",
            sa.String(length=160),
            nullable=True,
            comment="Checksum of the file's bytes as written by the load, <algorithm>:<hex digest> (sha256), "
            "verified when a query engine first opens the file and by `dms catalog verify`. NULL for rows of "
            "PostgreSQL shards and for files loaded before checksums were recorded.",
        ),
        schema="dms",
    )
    op.create_table(
        "catalog_generation",
        sa.Column(
            "id",
            sa.SMALLINT(),
            server_default=sa.text("1"),
            nullable=False,
            comment="Always 1 (the table has one row).",
        ),
        sa.Column(
            "generation",
            sa.BIGINT(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Incremented by every committed change to the catalog registry.",
        ),
        sa.Column(
            "changed_at",
            postgresql.TIMESTAMP(timezone=1),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the registry last changed (UTC).",
        ),
        sa.CheckConstraint("id = 1", name="ck_catalog_generation_single"),
        sa.PrimaryKeyConstraint("id"),
        schema="dms",
        comment="One row counting changes to what catalog queries see: triggers bump it in the same "
        "transaction as every change to catalog tables, loads, chunk placement and chunk files, so a "
        "long-lived query engine that keys its cached registry on it sees a commit at its next query, "
        "whatever the order loads commit in.",
    )
    op.execute("INSERT INTO dms.catalog_generation (id, generation) VALUES (1, 0)")
    op.execute(BUMP_FUNCTION)
    for create, _ in TRIGGERS:
        op.execute(create)
    set_schema_version("1.6.0")


def downgrade() -> None:
    set_schema_version("1.5.0")
    for _, drop in TRIGGERS:
        op.execute(drop)
    op.execute("DROP FUNCTION IF EXISTS dms.bump_catalog_generation()")
    op.drop_table("catalog_generation", schema="dms")
    op.drop_column("chunk_file", "checksum", schema="dms")
    op.execute(
        sa.text(
            "UPDATE dms.catalog_table SET description = :p || like_table "
            "WHERE like_table IS NOT NULL AND description IS NULL"
        ).bindparams(p=LIKE_PREFIX)
    )
    op.drop_column("catalog_table", "like_table", schema="dms")
