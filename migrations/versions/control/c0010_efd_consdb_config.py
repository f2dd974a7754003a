"""EFD transform configured as Rubin's ConsDB writes it (schema 1.8.0).

- `efd_transform_column.start_offset` takes ConsDB's meaning: hours, signed, added to the exposure's
  start (it was seconds, non-negative, subtracted). Stored outputs are converted (-seconds / 3600), and
  `function_args {"order": n}` becomes ConsDB's `{"degree": n, "fit_basis": "time"}` (the fit they had).
- `pending`: the output is not yet computed for exposures transformed before it was configured (or
  changed); the next `dms efd transform` run computes it for them. Stored outputs are computed: false.
- `datatype`, `unit`, `ucd`: ConsDB's datatype and ivoa unit / UCD of the output, for the record.
- The control-database functions of udfs/control/ are installed again (the new window, booleans,
  ConsDB's polynomial fit on the sample index, recomputation).

Revision ID: c0010
Revises: c0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version
from dms.udfs.control import control_install_sql

revision: str = "c0010"
down_revision: str | None = "c0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "efd_transform_column"


def _new_columns() -> tuple[sa.Column[object], ...]:
    """The columns added (new objects each call: a Column belongs to one table)."""
    return (
        sa.Column(
            "pending",
            sa.Boolean(),
            nullable=False,
            server_default=sa.text("false"),
            comment="Not yet computed for the exposures transformed before the output was configured or changed.",
        ),
        sa.Column("datatype", sa.String(length=16), nullable=True, comment="ConsDB datatype of the output."),
        sa.Column(
            "unit", sa.String(length=64), nullable=True, comment="Unit of the output (ConsDB ivoa.unit)."
        ),
        sa.Column(
            "ucd", sa.String(length=128), nullable=True, comment="UCD of the output (ConsDB ivoa.ucd)."
        ),
    )


def upgrade() -> None:
    op.drop_constraint("ck_efd_transform_column_start_offset", TABLE, schema="dms", type_="check")
    op.execute(
        "UPDATE dms.efd_transform_column SET start_offset = -start_offset / 3600.0, "
        "function_args = CASE WHEN function_args ? 'order' THEN (function_args - 'order') || "
        "jsonb_build_object('degree', function_args -> 'order', 'fit_basis', 'time') "
        "WHEN function = 'rms_from_polynomial_fit' THEN function_args || "
        '\'{"degree": 4, "fit_basis": "time"}\'::jsonb ELSE function_args END'
    )
    op.create_check_constraint(
        "ck_efd_transform_column_start_offset",
        TABLE,
        "start_offset > '-Infinity'::float8 AND start_offset < 'Infinity'::float8",
        schema="dms",
    )
    for column in _new_columns():
        op.add_column(TABLE, column, schema="dms")
    op.execute("DROP FUNCTION IF EXISTS dms.efd_transform_incremental(text, timestamp)")
    op.execute("DROP FUNCTION IF EXISTS dms._efd_rms_polyfit(text, text, text, text, text, integer)")
    op.execute(control_install_sql())
    set_schema_version("1.8.0")


def downgrade() -> None:
    # The functions installed by c0010 stay (they read the columns dropped here only when configured
    # outputs are pending); a downgrade restores the table's meaning, not the old function bodies.
    for column in _new_columns():
        op.drop_column(TABLE, column.name, schema="dms")
    op.drop_constraint("ck_efd_transform_column_start_offset", TABLE, schema="dms", type_="check")
    op.execute(
        "UPDATE dms.efd_transform_column SET start_offset = greatest(-start_offset * 3600.0, 0), "
        "function_args = CASE WHEN function_args ? 'degree' THEN (function_args - 'degree' - 'fit_basis') "
        "|| jsonb_build_object('order', function_args -> 'degree') ELSE function_args END"
    )
    op.create_check_constraint(
        "ck_efd_transform_column_start_offset",
        TABLE,
        "start_offset >= 0 AND start_offset < 'Infinity'::float8",
        schema="dms",
    )
    set_schema_version("1.6.0")
