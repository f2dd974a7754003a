"""Write a query result as a text table, CSV, JSON, Parquet or VOTable."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dms.errors import DMSError

FORMATS = ("table", "csv", "json", "parquet", "votable")


def write_result(
    result: Any, fmt: str, target: Path | IO[str], *, infos: Mapping[str, str] | None = None
) -> None:
    """Write `result` in `fmt`, marking a result cut at max_rows in-band where the format has a place:
    VOTable QUERY_STATUS=OVERFLOW, JSON "overflow": true, Parquet key-value metadata IVOA.QUERY_STATUS,
    the text table's last line. CSV has no such place: `dms query` says it on stderr (as for every format).
    `infos` (name -> text, e.g. what the ADQL translation did) become VOTable INFO elements.
    """
    table: pa.Table = result.table
    overflow = bool(result.overflow)
    if fmt in ("parquet", "votable") and not isinstance(target, Path):
        raise DMSError(f"--format {fmt} writes a binary file: give --output FILE")
    if fmt == "parquet":
        assert isinstance(target, Path)
        status = {b"IVOA.QUERY_STATUS": b"OVERFLOW" if overflow else b"OK"}
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **status}), target)
    elif fmt == "votable":
        # the services' writer, batch by batch: nulls as masks, char/boolean/timestamp fields as TAP writes
        from dms.services.vo.votable_writer import write_votable

        assert isinstance(target, Path)
        write_votable(target, table, overflow=overflow, infos=infos)
    else:
        text = {"csv": _csv, "json": _json, "table": _text}[fmt](table, overflow)
        if isinstance(target, Path):
            target.write_text(text)
        else:
            target.write(text)


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique for formats that need it: a repeated name gets _2, _3, ... (the first keeps
    its name), skipping names already taken."""
    taken = {n.lower() for n in names}
    seen: set[str] = set()
    result = []
    for name in names:
        if name.lower() not in seen:
            seen.add(name.lower())
            result.append(name)
            continue
        k = 2
        while f"{name}_{k}".lower() in taken:
            k += 1
        taken.add(f"{name}_{k}".lower())
        result.append(f"{name}_{k}")
    return result


def _csv(table: pa.Table, overflow: bool) -> str:
    del overflow  # a comment line would break CSV readers; the caller reports it on stderr
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue().decode()


def _json(table: pa.Table, overflow: bool) -> str:
    rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
    body = {"columns": table.column_names, "rows": [list(r) for r in rows], "overflow": overflow}
    return json.dumps(body, default=str) + "\n"


def _text(table: pa.Table, overflow: bool = False) -> str:
    names = table.column_names
    # by position, not by name: a result may have two columns of one name (SELECT a.id, b.id)
    rows = [[_cell(v) for v in row] for row in zip(*(c.to_pylist() for c in table.columns), strict=True)]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    cut = ", cut at --max-rows: more rows matched" if overflow else ""
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{cut})")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)
