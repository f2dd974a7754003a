"""EFD transform configured as Rubin's ConsDB writes it (schema 1.10.0).

- `efd_transform_column.start_offset` takes ConsDB's meaning: hours, signed, added to the exposure's
  start (it was seconds, non-negative, subtracted). Stored outputs are converted (-seconds / 3600), and
  `function_args {"order": n}` becomes ConsDB's `{"degree": n, "fit_basis": "time"}` (the fit they had).
- `pending`: the output is not yet computed for exposures transformed before it was configured (or
  changed); the next `dms efd transform` run computes it for them. Stored outputs are computed: false.
- `datatype`, `unit`, `ucd`: ConsDB's datatype and ivoa unit / UCD of the output, for the record.
- The control-database functions of udfs/control/ are installed again (the new window, booleans,
  ConsDB's polynomial fit on the sample index, recomputation).

Revision ID: c0010
Revises: c0014
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from dms.migrations.schema_info import set_schema_version
from dms.udfs.control import control_install_sql

revision: str = "c0010"
down_revision: str | None = "c0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "efd_transform_column"


TABLE_COMMENT = (
    "One output of the EFD transformation, configured as in Rubin's ConsDB transformed EFD: which to"
    "pic and fields it summarises, with which function, over which samples (an optional subset) and "
    "which time window (each exposure's timespan, its start moved by start_offset hours). Outputs of"
    " the pivoted tables are columns; outputs of the unpivoted tables are rows (property = name, fie"
    "ld = each field)."
)
PENDING = "Not yet computed for the exposures transformed before the output was configured or changed; the next transform run computes it for them."
COMMENTS_NEW = {
    "datatype": "ConsDB datatype of the output (float, int, boolean...).",
    "unit": "Unit of the output (ConsDB ivoa.unit).",
    "ucd": "UCD of the output (ConsDB ivoa.ucd).",
}
# Column comments (schema/dms.yaml descriptions) whose meaning changed: (new, old).
COMMENTS = {
    "fields": (
        "JSON array of the topic's field names summarised: a pivoted column summarises the values of all of them together (as ConsDB does), an unpivoted table gets one row per field.",
        "JSON array of the topic's field names summarised; exactly one for a pivoted table, one row each in an unpivoted table.",
    ),
    "function": (
        "Summary over the window: mean, stddev (sample, ddof 1), min, max, most_recent_value (the value of the latest sample in the window) or rms_from_polynomial_fit (RMS of the residuals of a least-squares polynomial of function_args.degree, default 1, fitted on the sample index or, with fit_basis time, on time), as ConsDB defines them.",
        "Summary over the window: mean, stddev (sample, ddof 1), min, max, most_recent_value (the value of the latest sample in the window) or rms_from_polynomial_fit (RMS of the residuals of a least-squares polynomial in time, of order function_args.order, default 4).",
    ),
    "function_args": (
        'Arguments of the function as a JSON object, e.g. {"degree": 4, "fit_basis": "index"}.',
        'Arguments of the function as a JSON object, e.g. {"order": 4}.',
    ),
    "subset_value": (
        "Value of subset_field selecting the samples, as text (cast to the field's type), or a JSON array of such values (any of them).",
        "Value of subset_field selecting the samples, as text (cast to the field's type).",
    ),
    "start_offset": (
        "Hours added to the exposure's start to begin the window (ConsDB's start_offset: -1 starts it an hour earlier).",
        "The window starts this many seconds before the exposure begins.",
    ),
}
OLD_TABLE_COMMENT = (
    "One output of the EFD transformation, configured as in Rubin's ConsDB transformed EFD: which topic and "
    "fields it summarises, with which function, over which samples (an optional subset) and which time "
    "window (each exposure's timespan, starting start_offset seconds earlier). Outputs of the pivoted "
    "tables are columns; outputs of the unpivoted tables are rows (property = name, field = each field)."
)


def _new_columns() -> tuple[sa.Column[object], ...]:
    """The columns added (new objects each call: a Column belongs to one table)."""
    return (
        sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.text("false"), comment=PENDING),
        sa.Column("datatype", sa.String(length=16), nullable=True, comment=COMMENTS_NEW["datatype"]),
        sa.Column("unit", sa.String(length=64), nullable=True, comment=COMMENTS_NEW["unit"]),
        sa.Column("ucd", sa.String(length=128), nullable=True, comment=COMMENTS_NEW["ucd"]),
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
    _comment(new=True)
    op.execute("DROP FUNCTION IF EXISTS dms.efd_transform_incremental(text, timestamp)")
    op.execute("DROP FUNCTION IF EXISTS dms._efd_rms_polyfit(text, text, text, text, text, integer)")
    op.execute(control_install_sql())
    set_schema_version("1.10.0")


def downgrade() -> None:
    # The functions installed by c0010 stay (they read the columns dropped here only when configured
    # outputs are pending); a downgrade restores the table's meaning, not the old function bodies.
    _comment(new=False)
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
    set_schema_version("1.9.0")


def _comment(new: bool) -> None:
    """The table's and the changed columns' comments (their descriptions in schema/dms.yaml)."""
    op.create_table_comment(TABLE, TABLE_COMMENT if new else OLD_TABLE_COMMENT, schema="dms")
    for column, (new_text, old_text) in COMMENTS.items():
        op.alter_column(TABLE, column, comment=new_text if new else old_text, schema="dms")
