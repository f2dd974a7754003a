"""Write a query result as a text table, CSV, JSON, Parquet or VOTable."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dms.errors import DMSError

FORMATS = ("table", "csv", "json", "parquet", "votable")


def write_result(result: Any, fmt: str, target: Path | IO[str]) -> None:
    table: pa.Table = result.table
    if fmt in ("parquet", "votable") and not isinstance(target, Path):
        raise DMSError(f"--format {fmt} writes a binary file: give --output FILE")
    if fmt == "parquet":
        assert isinstance(target, Path)
        pq.write_table(table, target)
    elif fmt == "votable":
        from astropy.io.votable import from_table
        from astropy.table import Table

        assert isinstance(target, Path)
        votable = from_table(Table(table.to_pydict()))
        if result.overflow:
            votable.resources[0].infos.append(_overflow_info())
        votable.to_xml(str(target))
    else:
        text = {"csv": _csv, "json": _json, "table": _text}[fmt](table)
        if isinstance(target, Path):
            target.write_text(text)
        else:
            target.write(text)


def _overflow_info() -> Any:
    from astropy.io.votable.tree import Info

    return Info(name="QUERY_STATUS", value="OVERFLOW")


def _csv(table: pa.Table) -> str:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue().decode()


def _json(table: pa.Table) -> str:
    rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
    return json.dumps({"columns": table.column_names, "rows": [list(r) for r in rows]}, default=str) + "\n"


def _text(table: pa.Table) -> str:
    names = table.column_names
    # by position, not by name: a result may have two columns of one name (SELECT a.id, b.id)
    rows = [[_cell(v) for v in row] for row in zip(*(c.to_pylist() for c in table.columns), strict=True)]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    lines = ["  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)
