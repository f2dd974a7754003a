"""Reading telemetry files into Arrow tables: JSON lines, Parquet, CSV and InfluxDB line protocol.

Every reader returns one table whose columns use the EFD's names: ``topic`` (unless the caller names
the topic), a time column, ``salIndex`` / ``sal_index``, the SAL private stamps, and the fields (in JSON
lines either at the top level or nested in a ``fields`` object). :func:`normalise` maps these onto the
sample table's columns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

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
# Input column -> sample-table column, for the columns that are not fields.
ALIASES = {
    "time": "sample_time",
    "sample_time": "sample_time",
    "private_efdStamp": "sample_time",
    "timestamp": "sample_time",
    "salIndex": "sal_index",
    "sal_index": "sal_index",
    "private_sndStamp": "private_snd_stamp",
    "private_snd_stamp": "private_snd_stamp",
    "private_seqNum": "private_seq_num",
    "private_seq_num": "private_seq_num",
    "topic": "topic",
}


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
    """Rename the EFD's column names to the sample table's (private_efdStamp -> sample_time, ...)."""
    names = [ALIASES.get(name, name) for name in table.column_names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EFDInputError(f"{source}: columns {repeated} are given more than once (under different names)")
    if "sample_time" not in names:
        raise EFDInputError(
            f"{source} has no time column; name it time, private_efdStamp (UTC seconds since 1970) "
            "or timestamp"
        )
    return table.rename_columns(names)
