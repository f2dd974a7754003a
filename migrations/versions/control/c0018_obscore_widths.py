"""ObsCore without silent truncation; CENTROID exact on the sphere (schema 1.14.0).

Rubin's ObsCore definition gives ``s_region`` 512 characters and ``lsst_filter`` 10: an STC-S polygon of a
detector footprint with full-precision vertices, or a union of them, is longer, and was cut (possibly
mid-number); LSSTCam physical filter names run past 10. Both become TEXT, published in TAP_SCHEMA with
arraysize ``*`` (the values are no longer cut by the archiver either).

The SQL functions are installed again (CREATE OR REPLACE): ``adql_centroid`` of a polygon is now its exact
centroid on the sphere.

Revision ID: c0018
Revises: c0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version
from dms.migrations.udf_ops import install_udfs

revision: str = "c0018"
down_revision: str | None = "c0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = {"s_region": 512, "lsst_filter": 10}
"""ivoa.ObsCore columns made TEXT, with their width in Rubin's definition."""


def upgrade() -> None:
    for column in WIDENED:
        op.alter_column("ObsCore", column, schema="ivoa", type_=sa.Text(), existing_nullable=True)
    install_udfs()
    set_schema_version("1.14.0")


def downgrade() -> None:
    # refuse rather than cut: a longer value would be truncated by going back
    for column, width in WIDENED.items():
        op.execute(
            sa.text(
                f'DO $$ BEGIN IF EXISTS (SELECT 1 FROM ivoa."ObsCore" WHERE length({column}) > {width}) '
                f"THEN RAISE EXCEPTION 'ivoa.ObsCore.{column} holds values longer than {width} characters: "
                "downgrading would truncate them'; END IF; END $$"
            )
        )
        op.alter_column("ObsCore", column, schema="ivoa", type_=sa.VARCHAR(width), existing_nullable=True)
    set_schema_version("1.13.0")
