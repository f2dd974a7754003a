"""APDB spatial index: `_healpix_29` on the APDB tables, and a fast read of each DiaObject's latest version.

Rubin's `apdb.yaml` has no pixel column (lsst-dax-apdb adds its own `pixelId` outside Felis). DMS adds
`_healpix_29` (the nested HEALPix index at order 29 of ra/dec, as in the partitioned catalog) to DiaObject,
DiaObjectLast, DiaSource and DiaForcedSource, with B-tree indexes so a region read is a set of index range
scans. The latest version of each DiaObject (`validityEndMjdTai IS NULL`) gets a partial index, so reading the
current objects of a region never touches older versions. The drift test lists these as intended differences.

Revision ID: c0014
Revises: c0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0014"
down_revision: str | None = "c0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables that get the `_healpix_29` column.
SPATIAL_TABLES = ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource")
EXTRA_COLUMN = "_healpix_29"
#: Index name -> (table, definition): names are fixed so the drift test can recognise them.
EXTRA_INDEXES = {
    "IDX_DiaObject_latest_hpx": ("DiaObject", '("_healpix_29") WHERE "validityEndMjdTai" IS NULL'),
    "IDX_DiaObject_latest_id": ("DiaObject", '("diaObjectId") WHERE "validityEndMjdTai" IS NULL'),
    "IDX_DiaObjectLast_hpx": ("DiaObjectLast", '("_healpix_29")'),
    "IDX_DiaSource_hpx_time": ("DiaSource", '("_healpix_29", "midpointMjdTai")'),
    "IDX_DiaSource_object_time": ("DiaSource", '("diaObjectId", "midpointMjdTai")'),
    "IDX_DiaForcedSource_hpx_time": ("DiaForcedSource", '("_healpix_29", "midpointMjdTai")'),
    "IDX_DiaForcedSource_object_time": ("DiaForcedSource", '("diaObjectId", "midpointMjdTai")'),
}


def upgrade() -> None:
    for table in SPATIAL_TABLES:
        op.execute(f'ALTER TABLE apdb."{table}" ADD COLUMN IF NOT EXISTS "{EXTRA_COLUMN}" bigint')
    for name, (table, definition) in EXTRA_INDEXES.items():
        op.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON apdb."{table}" {definition}')
    set_schema_version("1.12.0")


def downgrade() -> None:
    for name in EXTRA_INDEXES:
        op.execute(f'DROP INDEX IF EXISTS apdb."{name}"')
    for table in SPATIAL_TABLES:
        op.execute(f'ALTER TABLE apdb."{table}" DROP COLUMN IF EXISTS "{EXTRA_COLUMN}"')
    set_schema_version("1.6.0")
