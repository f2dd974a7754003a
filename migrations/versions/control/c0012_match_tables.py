"""Match tables: catalog_table.director_table2 and director_key2_column, role 'match' (schema 1.8.0).

A match table (Qserv's "ref-match" table, e.g. RefSrcMatch) relates the rows of two director tables with one
chunk layout: each row names an object of each (director_table/director_key_column and director_table2/
director_key2_column) and is stored in the chunk of both objects, so joins through it run chunk by chunk.
Its overlap_arcsec is the largest separation of a matched pair (Qserv's ang_sep).

Revision ID: c0012
Revises: c0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0012"
down_revision: str | None = "c0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE_BEFORE = "role IN ('director', 'child', 'replicated')"
ROLE_AFTER = "role IN ('director', 'child', 'replicated', 'match')"
DIRECTOR_BEFORE = (
    "(role = 'child') = (director_table IS NOT NULL) AND (role = 'child') = (director_key_column IS NOT NULL) "
    "AND (director_table IS NULL OR director_table <> name)"
)
DIRECTOR_AFTER = (
    "(role IN ('child', 'match')) = (director_table IS NOT NULL) "
    "AND (role IN ('child', 'match')) = (director_key_column IS NOT NULL) "
    "AND (role = 'match') = (director_table2 IS NOT NULL) "
    "AND (role = 'match') = (director_key2_column IS NOT NULL) "
    "AND (director_table IS NULL OR director_table <> name) "
    "AND (director_table2 IS NULL OR director_table2 <> name)"
)


ROLE_COMMENT_BEFORE = (
    "How the table is distributed: director (partitioned by its own position, with overlap), child (placed in "
    "its director row's chunk) or replicated (a full copy on every shard)."
)
ROLE_COMMENT_AFTER = (
    "How the table is distributed: director (partitioned by its own position, with overlap), child (placed in "
    "its director row's chunk), match (relating the rows of two directors, stored in the chunks of both) or "
    "replicated (a full copy on every shard)."
)


def _replace_checks(role: str, director: str) -> None:
    for name, expression in (("ck_catalog_table_role", role), ("ck_catalog_table_director", director)):
        op.drop_constraint(name, "catalog_table", schema="dms", type_="check")
        op.create_check_constraint(name, "catalog_table", expression, schema="dms")


def upgrade() -> None:
    op.add_column(
        "catalog_table",
        sa.Column(
            "director_table2",
            sa.String(length=128),
            nullable=True,
            comment="For a match table, the second director table (catalog_table.name) whose rows it matches.",
        ),
        schema="dms",
    )
    op.add_column(
        "catalog_table",
        sa.Column(
            "director_key2_column",
            sa.String(length=64),
            nullable=True,
            comment="For a match table, its column holding the second director row's id.",
        ),
        schema="dms",
    )
    _replace_checks(ROLE_AFTER, DIRECTOR_AFTER)
    op.alter_column(
        "catalog_table", "role", comment=ROLE_COMMENT_AFTER, existing_type=sa.String(length=16), schema="dms"
    )
    set_schema_version("1.8.0")


def downgrade() -> None:
    set_schema_version("1.7.0")
    op.execute("DELETE FROM dms.catalog_table WHERE role = 'match'")
    _replace_checks(ROLE_BEFORE, DIRECTOR_BEFORE)
    op.alter_column(
        "catalog_table", "role", comment=ROLE_COMMENT_BEFORE, existing_type=sa.String(length=16), schema="dms"
    )
    op.drop_column("catalog_table", "director_key2_column", schema="dms")
    op.drop_column("catalog_table", "director_table2", schema="dms")
