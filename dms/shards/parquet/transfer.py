"""Rows in and out of a DuckDB/Parquet shard: chunk files written whole, and the locked-down DuckDB
connection that reads them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 16_384
"""Rows per Parquet row group: small, so that DuckDB skips most of a chunk file on a `_healpix_29` range."""

LOCKED_DOWN: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
}
"""DuckDB settings of every connection that runs user SQL: no extension is installed or loaded on demand."""


def confine(conn: duckdb.DuckDBPyConnection, directories: list[Path]) -> None:
    """Lock a DuckDB connection that runs user SQL: it reads files only under `directories` (a shard's
    Parquet files; none for the merge database), cannot install or load extensions, divides integers as
    PostgreSQL and ADQL do, and no statement can change these settings (`lock_configuration`)."""
    locked = conn.execute("SELECT current_setting('lock_configuration')").fetchone()
    if locked and locked[0] in (True, "true"):
        return  # another connection of this process to the same database file locked it already
    if directories:
        conn.execute("SET allowed_directories = ?", [[f"{d}/" for d in directories]])
    conn.execute("SET GLOBAL integer_division = true")
    conn.execute("SET GLOBAL enable_external_access = false")
    conn.execute("SET GLOBAL lock_configuration = true")


BLOOM_FPP = 0.01
"""False-positive rate of the Bloom filter of a chunk file's id column."""


def write_chunk_file(part: pa.Table, path: Path, bloom_columns: tuple[str, ...] = ()) -> str:
    """Write one chunk's rows as a Parquet file sorted as given, atomically (a temporary name, then rename),
    and return the checksum of its bytes (`dms.query.integrity`), computed as they are written rather than by
    reading the file back; an existing file is complete and kept (a resumed load).

    `bloom_columns` (the id column) get a Bloom filter per row group: ids are not ordered within a chunk,
    so their min/max statistics skip nothing, and an id lookup would read every row group of the file."""
    from dms.query.integrity import ALGORITHM, file_checksum

    if path.exists():
        return file_checksum(path)
    sink = pa.BufferOutputStream()
    ndv = max(1, min(ROW_GROUP_ROWS, part.num_rows))
    bloom = {c: {"ndv": ndv, "fpp": BLOOM_FPP} for c in bloom_columns if c in part.column_names}
    pq.write_table(
        part,
        sink,
        row_group_size=ROW_GROUP_ROWS,
        compression="lz4",
        write_statistics=True,
        bloom_filter_options=bloom or None,
    )
    data = sink.getvalue()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as stream:
        stream.write(memoryview(data))
    os.replace(tmp, path)
    return f"{ALGORITHM}:{hashlib.sha256(memoryview(data)).hexdigest()}"
