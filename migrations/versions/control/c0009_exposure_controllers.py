"""Exposures of Rubin's controllers share day_obs and seq_num (schema 1.7.0).

Rubin's camera numbered exposures per controller (OCS `O`, CCS `C` before 2023-10-05, phosim `H`, simulated
`P`/`Q`/`S` before 2025-04-18): a test-stand exposure and an on-sky one can have the same observing day and
sequence number and are told apart by the exposure id (the controller offset) and the obs id. The unique
constraint on (instrument, day_obs, seq_num) refused the second of them; it becomes a plain index.

Revision ID: c0009
Revises: c0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from dms.migrations.schema_info import set_schema_version

revision: str = "c0009"
down_revision: str | None = "c0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("un_exposure_day_obs_seq_num", "exposure", schema="dms", type_="unique")
    op.create_index(
        "idx_exposure_day_obs_seq_num", "exposure", ["instrument", "day_obs", "seq_num"], schema="dms"
    )
    set_schema_version("1.7.0")


def downgrade() -> None:
    op.drop_index("idx_exposure_day_obs_seq_num", table_name="exposure", schema="dms")
    op.create_unique_constraint(
        "un_exposure_day_obs_seq_num", "exposure", ["instrument", "day_obs", "seq_num"], schema="dms"
    )
    set_schema_version("1.6.0")
