"""Level 1: the Alert Broker Feed's log in PostgreSQL (schema 1.13.0).

* `dms.alert_feed_topic`: topics, their partition count and next offset (the row a publisher locks, so
  offsets follow publish order);
* `dms.alert_feed_message`: the log: one row per message (the packet bytes, the alert id it carries);
* `dms.alert_feed_offset`: committed offsets per consumer group, topic and partition;
* `dms.alert_feed_delivery`: which alerts each destination (consumer group) has been delivered, as the
  offset ranges of each commit;
* schema `alerts` with the view `alerts.alert`: the alert archive as users query it (TAP, `dms query`;
  schema/alerts.yaml), readable by the role dms_reader (a view, so dms.alert itself stays private).

Revision ID: c0015
Revises: c0016
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from dms.migrations.schema_info import set_schema_version

revision: str = "c0015"
down_revision: str | None = "c0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("alert_feed_delivery", "alert_feed_offset", "alert_feed_message", "alert_feed_topic")


def _col(name: str, kind: sa.types.TypeEngine, comment: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, kind, nullable=nullable, comment=comment)


def _now(name: str, comment: str) -> sa.Column:
    return sa.Column(
        name,
        postgresql.TIMESTAMP(timezone=True),
        server_default=sa.text("CURRENT_TIMESTAMP"),
        nullable=False,
        comment=comment,
    )


def _topic() -> None:
    op.create_table(
        "alert_feed_topic",
        _col("name", sa.TEXT(), "Name of the topic (e.g. alerts, or a mini-broker user's feed)."),
        _col("partitions", sa.SMALLINT(), "Number of partitions; a key goes to crc32(key) % partitions."),
        _col("last_offset", sa.BIGINT(), "Offset of the topic's last message (0: none yet)."),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
            comment="When the topic was created (UTC).",
        ),
        sa.CheckConstraint("partitions >= 1 AND last_offset >= 0", name="ck_alert_feed_topic_counts"),
        sa.PrimaryKeyConstraint("name"),
        schema="dms",
        comment="Topics of the Alert Broker Feed.",
    )


def _message() -> None:
    op.create_table(
        "alert_feed_message",
        _col("topic", sa.TEXT(), "Topic of the message."),
        _col("offset", sa.BIGINT(), "Position in the topic's log (1-based, in publish order)."),
        _col("partition", sa.SMALLINT(), "Partition of the message."),
        _col("key", sa.TEXT(), "Key of the message (the alert id for alerts)."),
        _col("alert_id", sa.BIGINT(), "The alert carried, when the key is an alert id.", nullable=True),
        _col("packet", sa.LargeBinary(), "The alert packet: Confluent header + Avro."),
        _now("published_at", "When the message was appended (UTC)."),
        sa.ForeignKeyConstraint(["topic"], ["dms.alert_feed_topic.name"], name="fk_alert_feed_message_topic"),
        sa.PrimaryKeyConstraint("topic", "offset"),
        schema="dms",
        comment="The log of the Alert Broker Feed: one row per message of a topic.",
    )
    op.create_index(
        "idx_alert_feed_message_partition",
        "alert_feed_message",
        ["topic", "partition", "offset"],
        schema="dms",
    )
    op.create_index(
        "idx_alert_feed_message_time", "alert_feed_message", ["topic", "published_at"], schema="dms"
    )


def _offsets() -> None:
    op.create_table(
        "alert_feed_offset",
        _col("group_name", sa.TEXT(), "Consumer group (a destination, e.g. a community broker)."),
        _col("topic", sa.TEXT(), "Topic read."),
        _col("partition", sa.SMALLINT(), "Partition read."),
        _col("committed", sa.BIGINT(), "Offset of the last message the group has processed."),
        _now("committed_at", "When the offset was last committed (UTC)."),
        sa.ForeignKeyConstraint(["topic"], ["dms.alert_feed_topic.name"], name="fk_alert_feed_offset_topic"),
        sa.PrimaryKeyConstraint("group_name", "topic", "partition"),
        schema="dms",
        comment="Committed offsets of the Alert Broker Feed's consumer groups.",
    )
    op.create_table(
        "alert_feed_delivery",
        _col("group_name", sa.TEXT(), "Consumer group (destination) delivered to."),
        _col("topic", sa.TEXT(), "Topic delivered."),
        _col("partition", sa.SMALLINT(), "Partition delivered."),
        _col("first_offset", sa.BIGINT(), "First offset newly committed by this commit."),
        _col("last_offset", sa.BIGINT(), "Last offset newly committed by this commit."),
        _col("messages", sa.INTEGER(), "Messages of the partition in that range."),
        _now("committed_at", "When the destination committed them (UTC)."),
        sa.ForeignKeyConstraint(
            ["topic"], ["dms.alert_feed_topic.name"], name="fk_alert_feed_delivery_topic"
        ),
        sa.PrimaryKeyConstraint("group_name", "topic", "partition", "first_offset"),
        schema="dms",
        comment="Which alerts each destination has been delivered: the offset ranges it committed.",
    )


ARCHIVE_VIEW = (
    "CREATE VIEW alerts.alert AS SELECT alert_id, visit, detector, dia_object_id, midpoint_mjd_tai, ra, dec, "
    "_healpix_29 AS healpix_29, schema_id, packet_size FROM dms.alert"
)


def _archive_view() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS alerts")
    op.execute(ARCHIVE_VIEW)
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dms_reader') THEN "
        "GRANT USAGE ON SCHEMA alerts TO dms_reader; GRANT SELECT ON alerts.alert TO dms_reader; END IF; END $$"
    )


#: dms.schema_info facts of the published alerts schema (schema/alerts.yaml).
ALERTS_INFO = {"felis_version.alerts": "1.0.0", "namespace.alerts": "alerts"}


def upgrade() -> None:
    _topic()
    _message()
    _offsets()
    _archive_view()
    for key, value in ALERTS_INFO.items():
        op.execute(
            sa.text(
                "INSERT INTO dms.schema_info (key, value) VALUES (:k, :v) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).bindparams(k=key, v=value)
        )
    set_schema_version("1.13.0")


def downgrade() -> None:
    op.execute(
        sa.text("DELETE FROM dms.schema_info WHERE key = ANY(:keys)").bindparams(keys=list(ALERTS_INFO))
    )
    op.execute("DROP SCHEMA IF EXISTS alerts CASCADE")
    for table in TABLES:
        op.drop_table(table, schema="dms")
    set_schema_version("1.12.0")
