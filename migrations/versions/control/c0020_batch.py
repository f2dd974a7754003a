"""Productions: the Batch Processing service's jobs, tasks and datasets, quotas per priority class, and the
OCS commands that start batch productions (schema 1.17.0).

* `dms.batch_job`: a submitted workflow; `dms.batch_task`: one task of it (state, configuration and its hash,
  data ID, inputs, outputs, attempts, next-attempt time, error, log excerpt, provenance, priority, worker);
* `dms.batch_dataset` / `dms.batch_task_input`: the datasets each task writes and reads (the DAG's edges);
* `dms.batch_quota`: reserved minimum and flexible maximum of workers per priority class;
* `dms.ocs_command`: OCS-driven batch commands and their acknowledgements;
* `dms.calibration`: the Calibration Products Production's master calibrations and validity ranges.

Generated from schema/dms.yaml, then frozen; the partial indexes the claim and the lease reaper use are
added here (Felis cannot express them).

Revision ID: c0020
Revises: c0021
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version

revision: str = "c0020"
down_revision: str | None = "c0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "calibration",
    "ocs_command",
    "batch_quota",
    "batch_task_input",
    "batch_dataset",
    "batch_task",
    "batch_job",
)

#: Claims scan queued tasks in priority order then age; the lease reaper scans running tasks.
EXTRA_INDEXES = {
    "idx_batch_task_claim": "ON dms.batch_task (priority, task_id) WHERE state = 'queued'",
    "idx_batch_task_running": "ON dms.batch_task (lease_expires_at) WHERE state = 'running'",
}


def upgrade() -> None:
    op.create_table(
        "batch_job",
        sa.Column(
            "job_id",
            sa.BIGINT(),
            autoincrement=True,
            nullable=False,
            comment="Unique id of the job, assigned by the database.",
        ),
        sa.Column(
            "name",
            sa.VARCHAR(length=128),
            nullable=False,
            comment="Name of the job (from the workflow file).",
        ),
        sa.Column(
            "production",
            sa.VARCHAR(length=64),
            nullable=True,
            comment="Production the job belongs to (e.g. cpp-daily, drp), if any.",
        ),
        sa.Column(
            "priority_class",
            sa.VARCHAR(length=8),
            nullable=False,
            comment="Default priority class of the job's tasks: prompt, offline, ocs, dac, cpp or drp.",
        ),
        sa.Column(
            "state",
            sa.VARCHAR(length=16),
            server_default="active",
            nullable=False,
            comment="active, done, failed or cancelled.",
        ),
        sa.Column(
            "workflow",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="The workflow as submitted (tasks, configurations, datasets).",
        ),
        sa.Column(
            "dms_version",
            sa.VARCHAR(length=32),
            nullable=False,
            comment="Version of DMS that accepted the job.",
        ),
        sa.Column(
            "submitted_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the job was submitted (UTC).",
        ),
        sa.Column(
            "finished_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the job's last task ended or the job was cancelled (UTC).",
        ),
        sa.CheckConstraint("jsonb_typeof(workflow) = 'object'", name="ck_batch_job_workflow"),
        sa.CheckConstraint(
            "priority_class IN ('prompt', 'offline', 'ocs', 'dac', 'cpp', 'drp')",
            name="ck_batch_job_priority_class",
        ),
        sa.CheckConstraint("state IN ('active', 'done', 'failed', 'cancelled')", name="ck_batch_job_state"),
        sa.PrimaryKeyConstraint("job_id"),
        schema="dms",
        comment="A job of the Batch Processing service: a workflow (a DAG of tasks) submitted as one unit.",
    )
    op.create_table(
        "batch_task",
        sa.Column(
            "task_id",
            sa.BIGINT(),
            autoincrement=True,
            nullable=False,
            comment="Unique id of the task, assigned by the database (its age order).",
        ),
        sa.Column("job_id", sa.BIGINT(), nullable=False, comment="Job of the task."),
        sa.Column(
            "label",
            sa.VARCHAR(length=256),
            nullable=False,
            comment="Name of the task within its job (from the workflow).",
        ),
        sa.Column(
            "task_name",
            sa.VARCHAR(length=128),
            nullable=False,
            comment="Registered task run (dms task list).",
        ),
        sa.Column(
            "priority_class",
            sa.VARCHAR(length=8),
            nullable=False,
            comment="prompt, offline, ocs, dac, cpp or drp.",
        ),
        sa.Column(
            "priority",
            sa.SMALLINT(),
            nullable=False,
            comment="Rank of the priority class: 0 (prompt) first, 5 (drp) last.",
        ),
        sa.Column(
            "state",
            sa.VARCHAR(length=16),
            nullable=False,
            comment="blocked (waiting for upstream tasks), queued, running, done, failed, upstream_failed or cancelled.",
        ),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Configuration values of the task, as given.",
        ),
        sa.Column(
            "config_hash",
            sa.VARCHAR(length=16),
            nullable=True,
            comment="Hash of the validated configuration (provenance); NULL if it failed validation.",
        ),
        sa.Column(
            "data_id",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Data ID the task processes.",
        ),
        sa.Column(
            "inputs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Argument name to the dataset name (or list of names) it reads.",
        ),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Argument name to a literal JSON value.",
        ),
        sa.Column(
            "outputs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
            comment="Names of the datasets the task writes (a JSON array).",
        ),
        sa.Column(
            "waiting_on",
            sa.INTEGER(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Upstream tasks not yet done.",
        ),
        sa.Column(
            "attempts",
            sa.SMALLINT(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Attempts started so far.",
        ),
        sa.Column(
            "max_attempts",
            sa.SMALLINT(),
            server_default=sa.text("3"),
            nullable=False,
            comment="Attempts allowed before the task fails.",
        ),
        sa.Column(
            "next_attempt_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="Earliest time the task may be claimed (retry backoff).",
        ),
        sa.Column("error", sa.TEXT(), nullable=True, comment="Last error of the task."),
        sa.Column(
            "log_excerpt", sa.TEXT(), nullable=True, comment="Last lines the task logged in its last attempt."
        ),
        sa.Column(
            "dms_version",
            sa.VARCHAR(length=32),
            nullable=False,
            comment="Version of DMS that submitted (then ran) the task.",
        ),
        sa.Column(
            "worker",
            sa.VARCHAR(length=256),
            nullable=True,
            comment="Runner and Dask worker of the last attempt.",
        ),
        sa.Column(
            "cpus",
            postgresql.DOUBLE_PRECISION(),
            server_default=sa.text("1.0"),
            nullable=False,
            comment="Cores one run asks for (the task's declared resources).",
        ),
        sa.Column(
            "memory_mb",
            sa.INTEGER(),
            server_default=sa.text("1024"),
            nullable=False,
            comment="Memory one run asks for, in MiB.",
        ),
        sa.Column(
            "seconds", postgresql.DOUBLE_PRECISION(), nullable=True, comment="Run time of the last attempt."
        ),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the task was submitted (UTC).",
        ),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the last attempt started (UTC).",
        ),
        sa.Column(
            "finished_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the task ended (UTC).",
        ),
        sa.Column(
            "lease_expires_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="While running: when the claim lapses unless its runner renews it.",
        ),
        sa.CheckConstraint(
            "jsonb_typeof(config) = 'object' AND jsonb_typeof(data_id) = 'object' AND jsonb_typeof(inputs) = 'object' AND jsonb_typeof(args) = 'object' AND jsonb_typeof(outputs) = 'array'",
            name="ck_batch_task_json",
        ),
        sa.CheckConstraint(
            "priority_class IN ('prompt', 'offline', 'ocs', 'dac', 'cpp', 'drp') AND priority BETWEEN 0 AND 5",
            name="ck_batch_task_priority_class",
        ),
        sa.CheckConstraint(
            "state IN ('blocked', 'queued', 'running', 'done', 'failed', 'upstream_failed', 'cancelled')",
            name="ck_batch_task_state",
        ),
        sa.CheckConstraint(
            "state NOT IN ('failed', 'upstream_failed') OR error IS NOT NULL", name="ck_batch_task_error"
        ),
        sa.CheckConstraint(
            "attempts >= 0 AND max_attempts >= 1 AND waiting_on >= 0 AND cpus > 0 AND memory_mb > 0",
            name="ck_batch_task_counts",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["dms.batch_job.job_id"], name="fk_batch_task_job"),
        sa.PrimaryKeyConstraint("task_id"),
        sa.UniqueConstraint("job_id", "label", name="un_batch_task_label"),
        schema="dms",
        comment="A task of a batch job: one run of a registered task on a data ID, with its state, datasets, attempts and provenance.",
    )
    op.create_table(
        "batch_dataset",
        sa.Column("job_id", sa.BIGINT(), nullable=False, comment="Job of the dataset."),
        sa.Column(
            "name", sa.VARCHAR(length=256), nullable=False, comment="Name of the dataset within its job."
        ),
        sa.Column("producer", sa.BIGINT(), nullable=False, comment="Task that writes the dataset."),
        sa.Column(
            "value",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="The dataset's value (JSON), or a reference to it in the Data Backbone; NULL until written.",
        ),
        sa.Column(
            "written_at",
            postgresql.TIMESTAMP(timezone=True),
            nullable=True,
            comment="When the dataset was written (UTC).",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["dms.batch_job.job_id"], name="fk_batch_dataset_job"),
        sa.ForeignKeyConstraint(["producer"], ["dms.batch_task.task_id"], name="fk_batch_dataset_producer"),
        sa.PrimaryKeyConstraint("job_id", "name"),
        schema="dms",
        comment="A dataset written by a batch task: its producer and, once written, its value (kept when readers fail).",
    )
    op.create_table(
        "batch_task_input",
        sa.Column("task_id", sa.BIGINT(), nullable=False, comment="Task that reads the dataset."),
        sa.Column("job_id", sa.BIGINT(), nullable=False, comment="Job of the task."),
        sa.Column("dataset", sa.VARCHAR(length=256), nullable=False, comment="Name of the dataset read."),
        sa.ForeignKeyConstraint(["task_id"], ["dms.batch_task.task_id"], name="fk_batch_task_input_task"),
        sa.PrimaryKeyConstraint("task_id", "dataset"),
        schema="dms",
        comment="The datasets each batch task reads (the edges of the job's DAG).",
    )
    op.create_table(
        "batch_quota",
        sa.Column(
            "priority_class",
            sa.VARCHAR(length=8),
            nullable=False,
            comment="prompt, offline, ocs, dac, cpp or drp.",
        ),
        sa.Column(
            "reserved_workers",
            sa.INTEGER(),
            server_default=sa.text("0"),
            nullable=False,
            comment="Workers kept for this class (others cannot use them).",
        ),
        sa.Column(
            "max_workers",
            sa.INTEGER(),
            nullable=True,
            comment="Most workers this class may use at once; NULL: no cap.",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the quota was last set (UTC).",
        ),
        sa.CheckConstraint(
            "priority_class IN ('prompt', 'offline', 'ocs', 'dac', 'cpp', 'drp')",
            name="ck_batch_quota_priority_class",
        ),
        sa.CheckConstraint(
            "reserved_workers >= 0 AND (max_workers IS NULL OR max_workers >= reserved_workers)",
            name="ck_batch_quota_range",
        ),
        sa.PrimaryKeyConstraint("priority_class"),
        schema="dms",
        comment="Worker quotas per priority class: a reserved minimum others cannot take and a flexible maximum.",
    )
    op.create_table(
        "ocs_command",
        sa.Column(
            "command_id",
            sa.BIGINT(),
            autoincrement=True,
            nullable=False,
            comment="Sequence number of the command, assigned by the database.",
        ),
        sa.Column(
            "command",
            sa.VARCHAR(length=64),
            nullable=False,
            comment="Name of the command (e.g. runProduction).",
        ),
        sa.Column(
            "production", sa.VARCHAR(length=64), nullable=False, comment="Production the command starts."
        ),
        sa.Column(
            "parameters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
            comment="Parameters of the command.",
        ),
        sa.Column(
            "ack",
            sa.VARCHAR(length=16),
            server_default="accepted",
            nullable=False,
            comment="accepted, in_progress, complete or failed.",
        ),
        sa.Column("job_id", sa.BIGINT(), nullable=True, comment="Batch job started for the command."),
        sa.Column("message", sa.TEXT(), nullable=True, comment="Summary of the command's outcome."),
        sa.Column(
            "received_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the command was received (UTC).",
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the acknowledgement last changed (UTC).",
        ),
        sa.CheckConstraint(
            "ack IN ('accepted', 'in_progress', 'complete', 'failed')", name="ck_ocs_command_ack"
        ),
        sa.CheckConstraint("jsonb_typeof(parameters) = 'object'", name="ck_ocs_command_parameters"),
        sa.ForeignKeyConstraint(["job_id"], ["dms.batch_job.job_id"], name="fk_ocs_command_job"),
        sa.PrimaryKeyConstraint("command_id"),
        schema="dms",
        comment="Commands of the OCS (JSON over HTTP standing in for SAL) that start batch productions, with their acknowledgements.",
    )
    op.create_index("idx_batch_job_state", "batch_job", ["state", "submitted_at"], unique=False, schema="dms")
    op.create_index("idx_batch_task_job_state", "batch_task", ["job_id", "state"], unique=False, schema="dms")
    op.create_index("idx_batch_dataset_producer", "batch_dataset", ["producer"], unique=False, schema="dms")
    op.create_index(
        "idx_batch_task_input_dataset", "batch_task_input", ["job_id", "dataset"], unique=False, schema="dms"
    )
    op.create_table(
        "calibration",
        sa.Column(
            "calibration_id",
            sa.BIGINT(),
            autoincrement=True,
            nullable=False,
            comment="Unique id of the calibration, assigned by the database.",
        ),
        sa.Column("calibration_type", sa.VARCHAR(length=16), nullable=False, comment="bias, dark or flat."),
        sa.Column("instrument", sa.VARCHAR(length=32), nullable=False, comment="Instrument (e.g. LSSTCam)."),
        sa.Column("detector", sa.INTEGER(), nullable=False, comment="Detector number."),
        sa.Column(
            "physical_filter",
            sa.VARCHAR(length=32),
            nullable=True,
            comment="Filter of a flat; NULL for bias and dark.",
        ),
        sa.Column(
            "valid_from", postgresql.TIMESTAMP(), nullable=False, comment="Start of the validity range (TAI)."
        ),
        sa.Column(
            "valid_until",
            postgresql.TIMESTAMP(),
            nullable=True,
            comment="End of the validity range (TAI), exclusive; NULL: open-ended.",
        ),
        sa.Column("path", sa.TEXT(), nullable=False, comment="File of the master calibration (FITS)."),
        sa.Column("checksum", sa.VARCHAR(length=64), nullable=False, comment="SHA-256 (hex) of the file."),
        sa.Column("n_frames", sa.INTEGER(), nullable=False, comment="Raw frames combined."),
        sa.Column(
            "config_hash",
            sa.VARCHAR(length=16),
            nullable=False,
            comment="Configuration hash of the task that made it.",
        ),
        sa.Column("job_id", sa.BIGINT(), nullable=True, comment="Batch job that made it, if any."),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the calibration was registered (UTC); the newest valid one is chosen.",
        ),
        sa.CheckConstraint("calibration_type IN ('bias', 'dark', 'flat')", name="ck_calibration_type"),
        sa.CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="ck_calibration_validity"),
        sa.ForeignKeyConstraint(["job_id"], ["dms.batch_job.job_id"], name="fk_calibration_job"),
        sa.PrimaryKeyConstraint("calibration_id"),
        schema="dms",
        comment="Master calibrations (bias, dark, flat) of the Calibration Products Production and their validity ranges.",
    )
    op.create_index(
        "idx_calibration_lookup",
        "calibration",
        ["calibration_type", "instrument", "detector", "valid_from"],
        unique=False,
        schema="dms",
    )
    for name, definition in EXTRA_INDEXES.items():
        op.execute(f"CREATE INDEX {name} {definition}")
    set_schema_version("1.17.0")


def downgrade() -> None:
    for name in EXTRA_INDEXES:
        op.execute(f"DROP INDEX IF EXISTS dms.{name}")
    for table in TABLES:
        op.drop_table(table, schema="dms")
    set_schema_version("1.16.0")
