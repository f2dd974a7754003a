"""Replicated chunks: catalog_table.replicas (schema 1.4.0).

Revision ID: c0006
Revises: c0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0006"
down_revision: str | None = "c0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "catalog_table",
        sa.Column(
            "replicas",
            sa.SMALLINT(),
            server_default=sa.text("1"),
            nullable=False,
            comment="How many shards hold each chunk (the primary and replicas on the next shards); queries "
            "fail over to a replica when a shard is unreachable.",
        ),
        schema="dms",
    )
    set_schema_version("1.4.0")


def downgrade() -> None:
    set_schema_version("1.3.0")
    op.drop_column("catalog_table", "replicas", schema="dms")
