"""Bulk transfer between Arrow tables and PostgreSQL through COPY, in CSV that Arrow writes and reads.

Both directions are vectorised (Arrow's CSV writer and reader, in C++), so a visit of 10k DiaSources of 100
columns moves without a Python loop per row. The CSV conventions are pinned on both sides so nothing changes
on the way: NULL is an unquoted empty field and an empty string a quoted one; NaN and infinities are the words
PostgreSQL writes; booleans are t/f; floats are written by both sides in their shortest exact form.
"""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

CHUNK_BYTES = 1 << 20


def copy_in(cur: psycopg.Cursor[Any], table: sql.Composable, data: pa.Table) -> None:
    """COPY the rows of `data` into `table` (columns by name, in `data`'s order)."""
    if data.num_rows == 0:
        return
    buffer = io.BytesIO()
    pacsv.write_csv(data, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in data.column_names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, columns)
    view = buffer.getbuffer()
    with cur.copy(statement) as copy:
        for start in range(0, len(view), CHUNK_BYTES):
            copy.write(view[start : start + CHUNK_BYTES])


def copy_out(cur: psycopg.Cursor[Any], query: sql.Composable, schema: pa.Schema) -> pa.Table:
    """Run `query` through COPY ... TO STDOUT and read its rows as an Arrow table of `schema`."""
    buffer = io.BytesIO()
    with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(query)) as copy:
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return schema.empty_table()
    buffer.seek(0)
    return pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(block_size=1 << 24),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    ).select(schema.names)
