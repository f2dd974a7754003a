"""ObsCore regions with a spatial representation: ``s_region_shape`` and ``s_region_moc`` (schema 1.18.0).

``ivoa.ObsCore.s_region`` (STC-S text) gets the representation columns of :mod:`dms.query.regions`: the
region as a DALI double array (exact tests by ``adql_intersects``, udfs/postgres/60_regions.sql) and its
HEALPix coverage at order 10 (bigint[], with a GIN index for ``&&``). Existing rows are backfilled from
``s_region``; a text that is not STC-S is reported with its row and left without a representation.

Revision ID: c0023
Revises: c0020
Create Date: 2026-12-04
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version
from dms.migrations.udf_ops import install_udfs

revision: str = "c0023"
down_revision: str | None = "c0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)

REGION_COLUMNS = {
    "s_region_shape": postgresql.ARRAY(sa.Float(53)),
    "s_region_moc": postgresql.ARRAY(sa.BigInteger),
}
"""The columns added to ivoa.ObsCore (not in Rubin's ObsCore definition: intended differences)."""
MOC_INDEX = "idx_obscore_s_region_moc"
REGION_FUNCTIONS = (
    "adql_intersects(double precision[], double precision[])",
    "_dms_region_kind(double precision[])",
    "_dms_polygons_intersect(double precision[], double precision[])",
    "_dms_region_edge_distance(double precision[], double precision, double precision)",
    "_dms_arcs_cross(" + ", ".join(["double precision"] * 12) + ")",
    "_dms_arc_distance(" + ", ".join(["double precision"] * 9) + ")",
    "_dms_region_winds(double precision[], double precision, double precision)",
)


def upgrade() -> None:
    for name, kind in REGION_COLUMNS.items():
        op.add_column("ObsCore", sa.Column(name, kind, nullable=True), schema="ivoa")
    op.create_index(MOC_INDEX, "ObsCore", ["s_region_moc"], schema="ivoa", postgresql_using="gin")
    install_udfs()
    _backfill(op.get_bind())
    set_schema_version("1.18.0")


def _backfill(conn: sa.Connection) -> None:
    from dms.query import regions
    from dms.query.adql.errors import AdqlError

    rows = conn.execute(
        sa.text(
            'SELECT ctid::text, obs_publisher_did, s_region FROM ivoa."ObsCore" WHERE s_region IS NOT NULL'
        )
    ).all()
    update = sa.text(
        'UPDATE ivoa."ObsCore" SET s_region_shape = :s_region_shape, s_region_moc = :s_region_moc '
        "WHERE ctid = CAST(:row AS tid)"
    )
    for row, did, text in rows:
        try:
            values = regions.column_values(text)
        except AdqlError as exc:
            log.warning("ivoa.ObsCore row %s: s_region is not STC-S (%s); left without a shape", did, exc)
            continue
        conn.execute(update, {**values, "row": row})


def downgrade() -> None:
    op.drop_index(MOC_INDEX, "ObsCore", schema="ivoa")
    for name in REGION_COLUMNS:
        op.drop_column("ObsCore", name, schema="ivoa")
    for function in REGION_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    set_schema_version("1.17.0")
