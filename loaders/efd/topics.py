"""EFD topics: the registry in ``dms.efd_topic`` and each topic's typed sample table in schema ``efd``.

A topic's field schema is an Avro record schema, as the EFD's Kafka schema registry holds it:
``{"type": "record", "name": ..., "fields": [{"name": "azimuth", "type": "double", "units": "deg"}, ...]}``.
Its samples are stored in ``efd.<table_name>``: sample_time (UTC), sal_index, the SAL private stamps,
ingested_at, then one typed column per field; range-partitioned by sample_time into UTC days.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dms.loaders.efd.errors import EFDTopicError

# Avro primitive type -> PostgreSQL column type.
FIELD_TYPES: dict[str, str] = {
    "double": "double precision",
    "float": "real",
    "long": "bigint",
    "int": "integer",
    "boolean": "boolean",
    "string": "text",
}
KINDS = ("telemetry", "event", "command")
# Columns every sample table has; a field may not reuse these names.
RESERVED_COLUMNS = ("sample_time", "sal_index", "private_snd_stamp", "private_seq_num", "ingested_at")
_TOPIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Field:
    """One field of a topic: name, Avro type, and optional units and description."""

    name: str
    type: str
    units: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Topic:
    """A registered topic and where its samples are stored."""

    name: str
    csc: str
    kind: str
    fields: tuple[Field, ...]
    table_name: str
    retention_days: int | None = None

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


def table_name_for(topic: str) -> str:
    """A PostgreSQL table name for a topic: lower-case, [a-z0-9_], leaving room for the _YYYYMMDD suffix
    of its partitions (long names end in a hash of the topic so they stay unique)."""
    base = re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")
    if len(base) <= 54:
        return base
    return base[:45] + "_" + hashlib.sha1(topic.encode()).hexdigest()[:8]


def parse_field_schema(topic: str, schema: Any) -> tuple[Field, ...]:
    """The fields of an Avro record schema (a dict with a "fields" list), validated."""
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list) or not schema["fields"]:
        raise EFDTopicError(
            f"field schema of topic {topic!r} must be an Avro record: an object with a non-empty "
            '"fields" list of {"name": ..., "type": ...}'
        )
    fields: list[Field] = []
    for entry in schema["fields"]:
        name = entry.get("name") if isinstance(entry, dict) else None
        ftype = entry.get("type") if isinstance(entry, dict) else None
        if isinstance(ftype, list):  # ["null", "double"]: an optional field; columns are nullable anyway
            ftype = next((t for t in ftype if t != "null"), None)
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise EFDTopicError(
                f"topic {topic!r}: field name {name!r} is not an identifier of up to 63 chars"
            )
        if name in RESERVED_COLUMNS or name in (f.name for f in fields):
            raise EFDTopicError(f"topic {topic!r}: field name {name!r} is reserved or repeated")
        if ftype not in FIELD_TYPES:
            raise EFDTopicError(
                f"topic {topic!r}: field {name!r} has type {ftype!r}; valid types: {', '.join(FIELD_TYPES)}"
            )
        fields.append(Field(name, ftype, entry.get("units"), entry.get("description")))
    return tuple(fields)


def field_schema_json(topic: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The Avro record schema stored in dms.efd_topic.field_schema."""
    return {
        "type": "record",
        "name": topic.rsplit(".", 1)[-1],
        "namespace": topic.rsplit(".", 1)[0] if "." in topic else "",
        "fields": [
            {
                k: v
                for k, v in {
                    "name": f.name,
                    "type": f.type,
                    "units": f.units,
                    "description": f.description,
                }.items()
                if v is not None
            }
            for f in fields
        ],
    }


def csc_of(topic: str) -> str:
    """The CSC of an lsst.sal.<CSC>.<topic> name (the first component for other names)."""
    parts = topic.split(".")
    return parts[2] if len(parts) >= 4 and parts[:2] == ["lsst", "sal"] else parts[0]


def kind_of(topic: str) -> str:
    """telemetry, event (logevent_*) or command (command_*), from the topic name as SAL spells it."""
    last = topic.rsplit(".", 1)[-1]
    return (
        "event" if last.startswith("logevent_") else "command" if last.startswith("command_") else "telemetry"
    )


def register_topic(
    conn: psycopg.Connection[Any],
    name: str,
    fields: tuple[Field, ...],
    *,
    csc: str | None = None,
    kind: str | None = None,
    retention_days: int | None = None,
    description: str | None = None,
) -> Topic:
    """Register a topic and create its partitioned sample table (in the caller's transaction)."""
    if not _TOPIC_NAME.match(name) or len(name) > 255:
        raise EFDTopicError(f"topic name {name!r} is not dotted identifiers, e.g. lsst.sal.MTMount.azimuth")
    kind = kind or kind_of(name)
    if kind not in KINDS:
        raise EFDTopicError(f"topic {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if retention_days is not None and retention_days <= 0:
        raise EFDTopicError(f"topic {name!r}: retention_days must be positive, not {retention_days}")
    if get_topic(conn, name) is not None:
        raise EFDTopicError(f"topic {name!r} is already registered")
    parse_field_schema(name, field_schema_json(name, fields))  # same checks as for stored schemas
    table = table_name_for(name)
    conn.execute(
        "INSERT INTO dms.efd_topic (name, csc, kind, field_schema, retention_days, description, table_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            name,
            csc or csc_of(name),
            kind,
            json.dumps(field_schema_json(name, fields)),
            retention_days,
            description,
            table,
        ),
    )
    topic = Topic(name, csc or csc_of(name), kind, fields, table, retention_days)
    ensure_sample_table(conn, topic)
    return topic


def ensure_sample_table(conn: psycopg.Connection[Any], topic: Topic) -> None:
    """Create the topic's partitioned sample table if it does not exist (and record its name)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f'efd."{topic.table_name}"',)).fetchone()
    if exists is not None and exists[0] is not None:
        return
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(FIELD_TYPES[f.type])) for f in topic.fields
    ]
    conn.execute(
        sql.SQL(
            "CREATE TABLE efd.{} (sample_time timestamptz NOT NULL, "
            "sal_index integer NOT NULL DEFAULT 0 CHECK (sal_index >= 0), "
            "private_snd_stamp double precision, "
            "private_seq_num bigint, ingested_at timestamptz NOT NULL DEFAULT now(), {}, "
            "PRIMARY KEY (sample_time, sal_index)) PARTITION BY RANGE (sample_time)"
        ).format(sql.Identifier(topic.table_name), sql.SQL(", ").join(columns))
    )
    conn.execute("UPDATE dms.efd_topic SET table_name = %s WHERE name = %s", (topic.table_name, topic.name))


def get_topic(conn: psycopg.Connection[Any], name: str) -> Topic | None:
    """The registered topic `name`, or None."""
    row = conn.execute(
        "SELECT name, csc, kind, field_schema, table_name, retention_days FROM dms.efd_topic WHERE name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    fields = parse_field_schema(name, row[3])
    return Topic(row[0], row[1], row[2], fields, row[4] or table_name_for(name), row[5])


def list_topics(conn: psycopg.Connection[Any]) -> list[tuple[str, str, int, int | None, int]]:
    """(name, kind, number of fields, retention_days, samples loaded) of every topic, by name."""
    rows = conn.execute(
        "SELECT t.name, t.kind, jsonb_array_length(t.field_schema -> 'fields'), t.retention_days, "
        "coalesce((SELECT sum(inserted_count) FROM dms.efd_ingest_batch b WHERE b.topic = t.name), 0) "
        "FROM dms.efd_topic t ORDER BY t.name"
    ).fetchall()
    return [(r[0], r[1], int(r[2] or 0), r[3], int(r[4])) for r in rows]


def apply_retention(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Drop the partitions older than their topic's retention; (topic, partition) of each one dropped."""
    return [(r[0], r[1]) for r in conn.execute("SELECT * FROM dms.efd_apply_retention()").fetchall()]
