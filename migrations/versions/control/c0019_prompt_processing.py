"""Level 1: the Prompt Processing service's bookkeeping (schema 1.15.0).

* `dms.prompt_visit`: one row per visit announced by a "next visit" event (or calibration frame): its
  state (expected, processing, done, failed, cancelled, late), the times of the events, the number of
  attempts, the error of the last one and the seconds per step. The visit id is the key, so a repeated
  "next visit" or "visit ready" finds the row there and changes nothing it should not.
* `dms.prompt_detector_run`: one row per detector of a visit: state, attempts, error, the worker that ran it
  and the seconds per payload step (JSONB), keyed by (visit, detector).

Offline processing (`dms offline run`) reads both to find what to redo.

Revision ID: c0019
Revises: c0018
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version

revision: str = "c0019"
down_revision: str | None = "c0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VISIT_STATES = ("expected", "processing", "done", "failed", "cancelled", "late")
DETECTOR_STATES = ("expected", "processing", "done", "failed", "cancelled")
MODES = ("science", "calibration")


def _col(
    name: str, kind: sa.types.TypeEngine, comment: str, nullable: bool = True, default: str | None = None
) -> sa.Column:
    server_default = sa.text(default) if default is not None else None
    return sa.Column(name, kind, nullable=nullable, comment=comment, server_default=server_default)


def _time(name: str, comment: str, *, now: bool = False) -> sa.Column:
    return sa.Column(
        name,
        postgresql.TIMESTAMP(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP") if now else None,
        nullable=not now,
        comment=comment,
    )


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _visit() -> None:
    op.create_table(
        "prompt_visit",
        _col("visit", sa.BIGINT(), "Visit id (the exposure id of a one-snap visit).", nullable=False),
        _col("instrument", sa.VARCHAR(32), "Instrument of the visit (e.g. LSSTCam).", nullable=False),
        _col(
            "mode",
            sa.VARCHAR(16),
            "science (Alert Production) or calibration (bias/flat QC).",
            nullable=False,
        ),
        _col("band", sa.VARCHAR(8), "Band of the visit (ugrizy); NULL for a bias."),
        _col("ra", sa.DOUBLE_PRECISION(), "Right ascension of the pointing (ICRS)."),
        _col("dec", sa.DOUBLE_PRECISION(), "Declination of the pointing (ICRS)."),
        _col("mjd_tai", sa.DOUBLE_PRECISION(), "Expected mid-exposure time, MJD (TAI)."),
        _col("detectors", postgresql.JSONB(), "Detectors of the visit, a JSON array of ids.", nullable=False),
        _col(
            "state", sa.VARCHAR(16), "expected, processing, done, failed, cancelled or late.", nullable=False
        ),
        _time("next_visit_at", "When the next-visit event arrived (UTC).", now=True),
        _time("expected_at", "When the camera is expected to finish reading out (UTC)."),
        _time("visit_ready_at", "When the visit-ready event arrived (UTC), the end of readout."),
        _time("started_at", "When the last attempt started (UTC)."),
        _time("ended_at", "When the last attempt ended (UTC)."),
        _col("attempts", sa.INTEGER(), "Processing attempts so far (prompt and offline).", False, "0"),
        _col("processed_by", sa.VARCHAR(16), "prompt or offline: who ran the last attempt."),
        _col("error", sa.TEXT(), "Why the last attempt failed (NULL when it did not)."),
        _col(
            "timings",
            postgresql.JSONB(),
            "Seconds per step of the last attempt, a JSON object.",
            False,
            "'{}'",
        ),
        _col("n_dia_sources", sa.INTEGER(), "DiaSources stored for the visit."),
        _col("n_alerts", sa.INTEGER(), "Alerts archived for the visit."),
        sa.CheckConstraint(_in("state", VISIT_STATES), name="ck_prompt_visit_state"),
        sa.CheckConstraint(_in("mode", MODES), name="ck_prompt_visit_mode"),
        sa.CheckConstraint("jsonb_typeof(detectors) = 'array'", name="ck_prompt_visit_detectors"),
        sa.CheckConstraint("attempts >= 0", name="ck_prompt_visit_attempts"),
        sa.PrimaryKeyConstraint("visit"),
        schema="dms",
        comment="Visits of the Prompt Processing service, their events, state, attempts and timings.",
    )
    op.create_index("idx_prompt_visit_state", "prompt_visit", ["state", "visit_ready_at"], schema="dms")


def _detector_run() -> None:
    op.create_table(
        "prompt_detector_run",
        _col("visit", sa.BIGINT(), "Visit processed (prompt_visit.visit).", nullable=False),
        _col("detector", sa.INTEGER(), "Detector processed.", nullable=False),
        _col("state", sa.VARCHAR(16), "expected, processing, done, failed or cancelled.", nullable=False),
        _col("attempts", sa.INTEGER(), "Attempts on this detector so far.", False, "0"),
        _col("error", sa.TEXT(), "Why the last attempt failed (NULL when it did not)."),
        _col("timings", postgresql.JSONB(), "Seconds per payload step of the last attempt.", False, "'{}'"),
        _col("worker", sa.VARCHAR(128), "The worker (host:pid or Dask worker) that ran the last attempt."),
        _col("n_dia_sources", sa.INTEGER(), "DiaSources the payload found on the detector."),
        _col("n_forced_sources", sa.INTEGER(), "Forced measurements of known DiaObjects on the detector."),
        _time("started_at", "When the last attempt started (UTC)."),
        _time("ended_at", "When the last attempt ended (UTC)."),
        sa.ForeignKeyConstraint(["visit"], ["dms.prompt_visit.visit"], name="fk_prompt_detector_run_visit"),
        sa.CheckConstraint(_in("state", DETECTOR_STATES), name="ck_prompt_detector_run_state"),
        sa.CheckConstraint("attempts >= 0", name="ck_prompt_detector_run_attempts"),
        sa.PrimaryKeyConstraint("visit", "detector"),
        schema="dms",
        comment="Per-detector runs of the prompt payload, with state, attempts, worker and timings per step.",
    )


def upgrade() -> None:
    _visit()
    _detector_run()
    set_schema_version("1.15.0")


def downgrade() -> None:
    op.drop_table("prompt_detector_run", schema="dms")
    op.drop_index("idx_prompt_visit_state", table_name="prompt_visit", schema="dms")
    op.drop_table("prompt_visit", schema="dms")
    set_schema_version("1.14.0")
