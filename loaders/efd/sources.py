"""Reading telemetry files into Arrow tables: JSON lines, Parquet, CSV and InfluxDB line protocol.

Every reader returns one table whose columns use the EFD's names: ``topic`` (unless the caller names
the topic), a time column, ``salIndex`` / ``sal_index``, the SAL private stamps, and the fields (in JSON
lines either at the top level or nested in a ``fields`` object). :func:`normalise` maps these onto the
sample table's columns.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from astropy.time import Time

from dms.loaders.efd.errors import EFDInputError

FORMATS = ("jsonl", "parquet", "csv", "line")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".lp": "line",
    ".influx": "line",
}
# Input column -> sample-table column, for the columns that are not fields. The time is `time` (the
# EFD's InfluxDB time, i.e. private_efdStamp, UTC), `sample_time`, or `private_efdStamp` (UTC seconds);
# SAL's own `timestamp` field is TAI and is a field, used as the time only when nothing else gives one.
ALIASES = {
    "time": "sample_time",
    "sample_time": "sample_time",
    "salIndex": "sal_index",
    "sal_index": "sal_index",
    "private_sndStamp": "private_snd_stamp",
    "private_snd_stamp": "private_snd_stamp",
    "private_seqNum": "private_seq_num",
    "private_seq_num": "private_seq_num",
    "topic": "topic",
}
TAI_FIELD = "timestamp"
# SAL and EFD bookkeeping of an EFD `SELECT *` export that the sample tables do not keep (the sample
# time, salIndex, private_sndStamp and private_seqNum are kept).
EXPORT_ONLY_COLUMNS = (
    "private_efdStamp",
    "private_kafkaStamp",
    "private_rcvStamp",
    "private_revCode",
    "private_identity",
    "private_origin",
)
TIME_FROM_TAI = b"dms.time_from_tai"
"""Schema metadata key set by :func:`normalise` when the sample time was derived from `timestamp`."""


def detect_format(path: Path, fmt: str | None) -> str:
    """The format named, or the one the file's suffix implies."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise EFDInputError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise EFDInputError(
            f"cannot tell the format of {path} from its suffix; pass --format ({', '.join(FORMATS)})"
        )
    return found


def read(path: Path, fmt: str | None = None) -> pa.Table:
    """Read a telemetry file; EFDInputError naming the file when it is unreadable or malformed."""
    kind = detect_format(path, fmt)
    if not path.is_file():
        raise EFDInputError(f"no such file: {path}")
    try:
        if kind == "parquet":
            return pq.read_table(path)
        if kind == "csv":
            return pa_csv.read_csv(path)
        if kind == "line":
            return _read_line_protocol(path)
        table = pa_json.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError) as exc:
        raise EFDInputError(f"{path} is not valid {kind}: {str(exc).splitlines()[0]}") from exc
    if "fields" in table.column_names and pa.types.is_struct(table.schema.field("fields").type):
        nested = table.column("fields").combine_chunks()
        table = table.drop_columns(["fields"])
        for i, child in enumerate(nested.type):
            table = table.append_column(child.name, pc.struct_field(nested, [i]))
    return table


_LP_LINE = re.compile(
    r"^(?P<head>(?:[^ \\]|\\.)+) (?P<fields>(?:[^ \\\"]|\\.|\"(?:[^\"\\]|\\.)*\")+)(?: (?P<ts>-?\d+))?$"
)
_LP_SPLIT = re.compile(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)")


def _read_line_protocol(path: Path) -> pa.Table:
    """InfluxDB line protocol: ``topic[,salIndex=N] field=value[,...] [timestamp_ns]``.

    Integers carry an ``i`` suffix, strings are double-quoted, booleans are t/true/f/false; the
    timestamp is nanoseconds since 1970 (UTC). Tags other than salIndex are kept as string fields.
    """
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LP_LINE.match(line)
        if match is None or match["ts"] is None:
            raise ValueError(f"line {number}: expected 'topic[,tag=v] field=value[,...] timestamp_ns'")
        topic, *tags = match["head"].split(",")
        row: dict[str, Any] = {"topic": topic, "sample_time": int(match["ts"]) / 1e9}
        for tag in tags:
            key, _, value = tag.partition("=")
            row[key] = int(value) if key in ("salIndex", "sal_index") else value
        for item in _LP_SPLIT.split(match["fields"]):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"line {number}: field {item!r} has no '='")
            row[key] = _line_value(value, number)
        rows.append(row)
    return pa.Table.from_pylist(rows)


def _line_value(value: str, number: int) -> Any:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return json.loads(value)
    if value in ("t", "T", "true", "True", "TRUE"):
        return True
    if value in ("f", "F", "false", "False", "FALSE"):
        return False
    try:
        return int(value[:-1]) if value.endswith(("i", "u")) else float(value)
    except ValueError:
        raise ValueError(f"line {number}: {value!r} is not a number, string or boolean") from None


def normalise(table: pa.Table, source: str) -> pa.Table:
    """Rename the EFD's column names to the sample table's (time -> sample_time, salIndex -> sal_index...).

    The sample time comes from `time` or `sample_time`, else `private_efdStamp` (UTC), else SAL's
    `timestamp` converted from TAI to UTC (which then stays a field too). Columns only an EFD export
    carries (private_kafkaStamp, ...; private_efdStamp when `time` is given) are dropped.
    """
    has_time = any(c in table.column_names for c in ("time", "sample_time"))
    if not has_time and "private_efdStamp" in table.column_names:
        table = table.rename_columns(
            ["sample_time" if c == "private_efdStamp" else c for c in table.column_names]
        )
        has_time = True
    table = table.drop_columns([c for c in EXPORT_ONLY_COLUMNS if c in table.column_names])
    names = [ALIASES.get(name, name) for name in table.column_names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EFDInputError(f"{source}: columns {repeated} are given more than once (under different names)")
    table = table.rename_columns(names)
    if has_time:
        return table
    if TAI_FIELD not in table.column_names:
        raise EFDInputError(
            f"{source} has no time column; name it time (ISO 8601 or UTC seconds), private_efdStamp "
            "(UTC seconds since 1970) or timestamp (SAL's TAI seconds since 1970)"
        )
    table = table.append_column("sample_time", tai_seconds_to_utc(table.column(TAI_FIELD), source))
    return table.replace_schema_metadata({**(table.schema.metadata or {}), TIME_FROM_TAI: b"1"})


def tai_seconds_to_utc(column: pa.ChunkedArray, source: str) -> pa.Array:
    """SAL TAI seconds since 1970 (astropy's unix_tai, as ts_utils' tai_from_utc) as UTC timestamps.

    UTC = TAI - (TAI - UTC), the leap-second count of each sample's date (37 s since 2017).
    """
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise EFDInputError(f"{source}: timestamp (TAI seconds) has type {column.type}, not a number")
    if column.null_count:
        raise EFDInputError(f"{source}: {column.null_count} row(s) have no timestamp")
    tai = column.to_numpy().astype("float64")
    if len(tai) == 0:
        return pa.array([], pa.timestamp("us", tz="UTC"))
    # astropy warns (ErfaWarning) about dates it deems dubious; bad dates are refused later anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utc = Time(tai, format="unix_tai").unix
    micros = np.round(np.asarray(utc) * 1e6).astype("int64")
    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
