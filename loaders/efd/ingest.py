"""`dms efd load`: telemetry files into the topics' partitioned sample tables, in one transaction per file.

Each topic's rows are checked against its field schema (unknown fields, values of the wrong type,
missing or future sample times, times out of order within the file), bulk-copied (COPY) into a staging
table, and inserted into the topic's table, creating the daily partitions they need; samples already
stored are skipped, so loading a file twice is harmless. Any error rolls the whole file back.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from dms.loaders.efd import sources
from dms.loaders.efd.errors import EFDInputError
from dms.loaders.efd.topics import Field, Topic, ensure_sample_table, get_topic, register_topic

log = logging.getLogger(__name__)

FUTURE_TOLERANCE = dt.timedelta(minutes=1)
"""Sample times later than now plus this are refused (clock skew between the CSCs and DMS)."""
_COPY_BATCH_ROWS = 200_000
_META_COLUMNS = ("sample_time", "sal_index", "private_snd_stamp", "private_seq_num")


@dataclass(frozen=True)
class TopicLoad:
    """What one load stored for one topic."""

    topic: str
    rows: int
    inserted: int
    first: dt.datetime
    last: dt.datetime
    created: bool


def load_file(
    conn: psycopg.Connection[Any],
    path: Path,
    *,
    fmt: str | None = None,
    topic: str | None = None,
    create: bool = False,
    unordered: bool = False,
    now: dt.datetime | None = None,
) -> list[TopicLoad]:
    """Load one telemetry file; returns what was stored per topic. All or nothing."""
    table = sources.read(path, fmt)
    if topic is not None:
        table = table.drop_columns(["topic"]) if "topic" in table.column_names else table
        table = table.append_column("topic", pa.array([topic] * table.num_rows, pa.string()))
    elif "topic" not in table.column_names:
        raise EFDInputError(f"{path} has no topic column; add one or name the topic with --topic")
    table = table.append_column("_row", pa.array(np.arange(1, table.num_rows + 1)))
    now = now or dt.datetime.now(dt.UTC)
    results = []
    with conn.transaction():
        # Shared with other loaders; the transform waits for it so its watermark never skips a batch.
        conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext('dms.efd_ingest'))")
        topics = pc.unique(table.column("topic")).to_pylist()
        for name in sorted(t for t in topics if t is not None):
            rows = table.filter(pc.equal(table.column("topic"), name)).drop_columns(["topic"])
            results.append(_load_topic(conn, name, rows, str(path), create, unordered, now))
        if None in topics:
            raise EFDInputError(f"{path}: some rows have no topic")
    return results


def _load_topic(
    conn: psycopg.Connection[Any],
    name: str,
    rows: pa.Table,
    source: str,
    create: bool,
    unordered: bool,
    now: dt.datetime,
) -> TopicLoad:
    label = f"{source}, topic {name}"
    # Normalised per topic: a file mixing topics may name the time differently for each.
    rows = sources.normalise(_drop_empty_columns(rows), label)
    topic, created = get_topic(conn, name), False
    if topic is None:
        if not create:
            raise EFDInputError(
                f"{label}: unknown topic {name!r}; register it (`dms efd topic add`) or load with --create"
            )
        topic, created = register_topic(conn, name, _infer_fields(rows, label)), True
    ensure_sample_table(conn, topic)  # topics registered before their first load have none yet
    rows = _conform(rows, topic, label)
    rows = _check_times(rows, label, unordered, now)
    first, last = pc.min(rows.column("sample_time")).as_py(), pc.max(rows.column("sample_time")).as_py()
    conn.execute("SELECT dms.efd_ensure_partitions(%s, %s, %s)", (topic.table_name, first, last))
    inserted = _copy_rows(conn, topic, rows.drop_columns(["_row"]))
    conn.execute(
        "INSERT INTO dms.efd_ingest_batch (topic, source, row_count, inserted_count, min_sample_time, "
        "max_sample_time) VALUES (%s, %s, %s, %s, %s, %s)",
        (name, source, rows.num_rows, inserted, first, last),
    )
    conn.execute("SELECT pg_notify('dms_efd', %s)", (name,))  # wakes `dms efd transform --watch`
    log.info("%s: %d rows, %d new", label, rows.num_rows, inserted)
    return TopicLoad(name, rows.num_rows, inserted, first, last, created)


def _drop_empty_columns(rows: pa.Table) -> pa.Table:
    """Columns without a value for this topic (other topics' fields in a mixed file) are not its fields."""
    empty = [c for c in rows.column_names if c != "_row" and rows.column(c).null_count == rows.num_rows]
    return rows.drop_columns(empty)


def _infer_fields(rows: pa.Table, label: str) -> tuple[Field, ...]:
    """A field schema from the Arrow types of a new topic's columns (for --create)."""
    fields = []
    for column in rows.schema:
        if column.name in (*_META_COLUMNS, "_row"):
            continue
        t = column.type
        ftype = (
            "double"
            if pa.types.is_floating(t)
            else "long"
            if pa.types.is_integer(t)
            else "boolean"
            if pa.types.is_boolean(t)
            else "string"
            if pa.types.is_string(t) or pa.types.is_large_string(t)
            else None
        )
        if ftype is None:
            raise EFDInputError(f"{label}: cannot store column {column.name!r} of type {t} as an EFD field")
        fields.append(Field(column.name, ftype))
    if not fields:
        raise EFDInputError(f"{label}: no field columns to create the topic from")
    return tuple(fields)


def _conform(rows: pa.Table, topic: Topic, label: str) -> pa.Table:
    """The rows with each column cast to its sample-table type; errors name the field and a bad row."""
    time_from_tai = (rows.schema.metadata or {}).get(sources.TIME_FROM_TAI) is not None
    if time_from_tai and topic.field(sources.TAI_FIELD) is None:
        rows = rows.drop_columns([sources.TAI_FIELD])  # used as the sample time only
    unknown = [c for c in rows.column_names if c not in (*_META_COLUMNS, "_row") and topic.field(c) is None]
    if unknown:
        raise EFDInputError(
            f"{label}: unknown field(s) {', '.join(unknown)}; the topic's fields are "
            f"{', '.join(topic.field_names())}"
        )
    out = {"sample_time": _sample_times(rows, label), "_row": rows.column("_row")}
    meta = {
        "sal_index": ("int", pa.int32()),
        "private_snd_stamp": ("double", pa.float64()),
        "private_seq_num": ("long", pa.int64()),
    }
    for name, (avro, arrow_type) in meta.items():
        if name in rows.column_names:
            out[name] = _cast(rows, name, avro, arrow_type, label)
    if "sal_index" in out and pc.any(pc.less(out["sal_index"], 0)).as_py():
        raise EFDInputError(f"{label}: sal_index must not be negative")
    for field in topic.fields:
        if field.name in rows.column_names:
            out[field.name] = _cast(rows, field.name, field.type, _ARROW_TYPES[field.type], label)
    return pa.table(out)


_ARROW_TYPES = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "int": pa.int32(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}


def _cast(rows: pa.Table, name: str, avro: str, target: pa.DataType, label: str) -> pa.ChunkedArray:
    column = rows.column(name)
    t = column.type
    ok = (
        (avro in ("double", "float") and (pa.types.is_floating(t) or pa.types.is_integer(t)))
        or (avro in ("long", "int") and pa.types.is_integer(t))
        or (avro == "boolean" and pa.types.is_boolean(t))
        or (avro == "string" and (pa.types.is_string(t) or pa.types.is_large_string(t)))
        or pa.types.is_null(t)
    )
    if ok:
        try:
            return column.cast(target)
        except pa.ArrowInvalid as exc:
            raise EFDInputError(f"{label}: field {name!r} ({avro}): {str(exc).splitlines()[0]}") from exc
    example = next((v for v in column.to_pylist() if v is not None), None)
    raise EFDInputError(
        f"{label}: field {name!r} is {avro} in the topic's schema but the input has {t} values "
        f"(e.g. {example!r})"
    )


def _sample_times(rows: pa.Table, label: str) -> pa.ChunkedArray:
    """Sample times as UTC timestamps: ISO 8601 strings, or numbers of seconds since 1970 (UTC)."""
    column = rows.column("sample_time")
    if column.null_count:
        raise EFDInputError(f"{label}: {column.null_count} row(s) have no sample time")
    target = pa.timestamp("us", tz="UTC")
    try:
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            micros = pc.round(pc.multiply(column.cast(pa.float64()), 1e6))
            return micros.cast(pa.int64()).cast(target)
        if pa.types.is_timestamp(column.type):
            utc = column if column.type.tz else pc.assume_timezone(column, "UTC")
            if column.type.unit == "ns":  # rounded to the microsecond the sample tables keep
                utc = pc.round_temporal(utc, unit="microsecond")
            return utc.cast(target)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return _iso_times(column)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EFDInputError(f"{label}: sample times are not ISO 8601 or UTC seconds: {exc}") from exc
    raise EFDInputError(f"{label}: sample times have type {column.type}; give ISO 8601 text or UTC seconds")


def _iso_times(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO 8601 text as UTC microseconds: up to nanosecond fractions (rounded to the microsecond the
    sample tables keep), with a zone (Z, +hh:mm) or without one (taken as UTC)."""
    try:
        nanos = column.cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:  # no zone offset in the text
        nanos = pc.assume_timezone(column.cast(pa.timestamp("ns")), "UTC")
    return pc.round_temporal(nanos, unit="microsecond").cast(pa.timestamp("us", tz="UTC"))


def _check_times(rows: pa.Table, label: str, unordered: bool, now: dt.datetime) -> pa.Table:
    """Refuse future times and (unless `unordered`) times not increasing per sal_index; sort the rows."""
    times = rows.column("sample_time").cast(pa.int64()).to_numpy()
    limit = int((now + FUTURE_TOLERANCE).timestamp() * 1e6)
    if (times > limit).any():
        i = int(np.argmax(times > limit))
        raise EFDInputError(
            f"{label}: row {rows.column('_row')[i]} has sample time "
            f"{rows.column('sample_time')[i]} in the future (now is {now:%Y-%m-%dT%H:%M:%S}Z)"
        )
    sal = rows.column("sal_index").to_numpy() if "sal_index" in rows.column_names else np.zeros(len(times))
    order = np.lexsort((times, sal)) if unordered else np.lexsort((np.arange(len(times)), sal))
    t, s = times[order], sal[order]
    bad = np.nonzero((s[1:] == s[:-1]) & (t[1:] <= t[:-1]))[0]
    if bad.size:
        i = int(order[bad[0] + 1])
        what = "repeats" if unordered or t[bad[0] + 1] == t[bad[0]] else "is earlier than"
        raise EFDInputError(
            f"{label}: row {rows.column('_row')[i]} (sample time {rows.column('sample_time')[i]}, sal_index "
            f"{int(s[bad[0] + 1])}) {what} the sample before it; samples of a CSC must be in time order "
            "(use --unordered to sort them, which still refuses repeated times)"
        )
    return rows.take(pa.array(order))


def _copy_rows(conn: psycopg.Connection[Any], topic: Topic, rows: pa.Table) -> int:
    """COPY the rows in; returns the number of rows inserted (samples already stored are skipped).

    When the table holds no sample in the rows' time span (the usual case: new telemetry), COPY goes
    straight into the partitions; otherwise through a staging table and INSERT ... ON CONFLICT DO NOTHING.
    """
    target = sql.Identifier("efd", topic.table_name)
    first, last = rows.column("sample_time")[0].as_py(), rows.column("sample_time")[-1].as_py()
    overlap = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE sample_time BETWEEN %s AND %s)").format(target),
        (min(first, last), max(first, last)),
    ).fetchone()
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in rows.column_names)
    if overlap is not None and not overlap[0]:
        try:
            with conn.transaction():
                _copy(conn, sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(target, columns), rows)
            return rows.num_rows
        except psycopg.errors.UniqueViolation:
            pass  # another load stored samples of this span meanwhile: fall back to the staging table
    conn.execute("DROP TABLE IF EXISTS _efd_stage")
    conn.execute(
        sql.SQL("CREATE TEMP TABLE _efd_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(target)
    )
    _copy(conn, sql.SQL("COPY _efd_stage ({}) FROM STDIN (FORMAT csv)").format(columns), rows)
    result = conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM _efd_stage ON CONFLICT DO NOTHING").format(
            target, columns, columns
        )
    )
    return result.rowcount


def _copy(conn: psycopg.Connection[Any], statement: sql.Composed, rows: pa.Table) -> None:
    """Stream the rows as CSV (written by Arrow, in batches) into a COPY ... FROM STDIN."""
    options = pa_csv.WriteOptions(include_header=False)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for start in range(0, rows.num_rows, _COPY_BATCH_ROWS):
            buffer = io.BytesIO()
            pa_csv.write_csv(rows.slice(start, _COPY_BATCH_ROWS), buffer, options)
            copy.write(buffer.getvalue())
