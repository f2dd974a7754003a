"""Shard bookkeeping: the dms schema, schema_info, and the UDFs.

Revision ID: s0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.udf_ops import drop_udfs, install_udfs

revision: str = "s0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("shard",)
depends_on: str | Sequence[str] | None = None

SHARD_SCHEMA_VERSION = "1.0.0"


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS dms")
    info = op.create_table(
        "schema_info",
        sa.Column("key", sa.Text(), primary_key=True, comment="Name of the item."),
        sa.Column("value", sa.Text(), nullable=False, comment="Its value."),
        schema="dms",
        comment="Versions and other facts about this shard's DMS schema.",
    )
    op.bulk_insert(info, [{"key": "schema_version", "value": SHARD_SCHEMA_VERSION}])
    install_udfs()


def downgrade() -> None:
    drop_udfs()
    op.drop_table("schema_info", schema="dms")
    op.execute("DROP SCHEMA IF EXISTS dms")
