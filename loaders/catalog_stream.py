"""A load's rows as a stream: the input files read batch by batch, and the partitioned rows gathered by chunk.

`LoadSource` reads the files of one load in batches (Parquet row groups, CSV blocks), each batch already
in the table's column order and types. `ChunkSpool` gathers one shard's partitioned rows by chunk, in memory
up to a budget and then in Arrow IPC spill files, and hands them back one chunk at a time, sorted by
`_healpix_29`, so a load of any size holds about one chunk (plus the budget) in memory. `IndexSpool` does
the same for the director index a load adds: sorted by id in memory when small, else out of core by DuckDB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dms.loaders.catalog_errors import LoadError
from dms.loaders.catalog_regions import with_representation
from dms.loaders.partition import from_nuniq
from dms.loaders.readers import BATCH_ROWS, catalog_file_schema, iter_catalog_file
from dms.schema.catalog import CatalogTable
from dms.shards import REPLICATED_CHUNK

SPOOL_MEMORY_BYTES = 1 << 30
"""Bytes of partitioned rows a load keeps in memory before spilling them to disk (all shards together)."""
INDEX_MEMORY_ROWS = 20_000_000
"""Director index rows (24 bytes each) a load sorts in memory; more are sorted by DuckDB on disk."""
POSITION_MEMORY_ROWS = 32_000_000
"""Positions (`_healpix_29`, 8 bytes each) of a first director load kept in memory between its two passes;
more go to .npy files."""
INDEX_SORT_MEMORY = "2GB"
"""DuckDB's memory limit for sorting a large director index (the rest spills to its temporary directory)."""
INDEX_ROW_GROUP_ROWS = 8192
"""Rows per row group of a director index file: a lookup reads one such group per id (see query.director)."""


class RowSource(Protocol):
    """What a load reads its rows from: batches as a table's columns (or only `columns`) and types."""

    def batches(self, table: CatalogTable, columns: list[str] | None = None) -> Iterator[pa.Table]: ...


class LoadSource:
    """The files of one load: their common columns (from metadata only) and their rows, batch by batch."""

    def __init__(self, paths: list[Path], batch_rows: int | None = None) -> None:
        if not paths:
            raise LoadError("no files to load")
        self.paths = paths
        self.batch_rows = batch_rows or BATCH_ROWS
        schemas = [catalog_file_schema(path) for path in paths]
        first = schemas[0]
        for path, schema in zip(paths[1:], schemas[1:], strict=True):
            if [n.lower() for n in schema.names] != [n.lower() for n in first.names]:
                raise LoadError(f"{path} has columns {schema.names}, unlike {paths[0]} ({first.names})")
        renamed = [pa.schema([f.with_name(n) for f, n in zip(s, first.names, strict=True)]) for s in schemas]
        self.schema = pa.unify_schemas(renamed, promote_options="permissive")
        self.file_columns = [s.names for s in schemas]

    @property
    def rows(self) -> int | None:
        """The number of input rows when every file says it in its metadata (Parquet), else None."""
        if not all(p.name.lower().endswith((".parquet", ".pq")) for p in self.paths):
            return None
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self.paths)

    def check_columns(self, table: CatalogTable) -> None:
        """An error naming the columns that do not match the table, before any row is read."""
        names = self.schema.names
        derived = {n.lower() for n in table.derived_columns}  # computed by the load (catalog_regions)
        wanted = {c.name.lower() for c in table.columns if c.name.lower() not in derived}
        present = {n.lower() for n in names}
        extra = sorted(n for n in names if n.lower() not in wanted)
        missing = sorted(c.name for c in table.columns if c.name.lower() not in present | derived)
        if extra or missing:
            problems = [
                f"unknown columns {extra}" if extra else "",
                f"missing columns {missing}" if missing else "",
            ]
            raise LoadError(
                f"the file's columns do not match table {table.name}: " + "; ".join(p for p in problems if p)
            )

    def batches(self, table: CatalogTable, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rows of every file in batches, as the table's columns (or only `columns`) and types; a region
        column's representation is computed from its text (dms.loaders.catalog_regions)."""
        derived = set(table.derived_columns)
        wanted = [
            c for c in table.columns if (columns is None or c.name in columns) and c.name not in derived
        ]
        for path, file_columns in zip(self.paths, self.file_columns, strict=True):
            by_lower = {n.lower(): n for n in file_columns}
            names = [by_lower[c.name.lower()] for c in wanted]
            first_row = 1
            for batch in iter_catalog_file(path, names, self.batch_rows):
                rows = conform_batch(wanted, batch)
                if derived and columns is None:
                    rows = with_representation(table, rows, first_row, str(path))
                first_row += rows.num_rows
                yield rows


def conform_batch(columns: list, batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """A batch's columns (in `columns`' order, read as such) cast to the table's types, or an error naming
    the column that does not fit."""
    arrays = []
    for i, column in enumerate(columns):
        values = batch.column(i)
        try:
            arrays.append(values.cast(column.arrow_type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LoadError(
                f"column {column.name!r} of type {values.type} cannot be stored as {column.datatype}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return pa.Table.from_arrays(arrays, names=[c.name for c in columns])


class ChunkSpool:
    """One shard's rows of a load, gathered by chunk (NUNIQ; -1 for a replicated table's one part)."""

    def __init__(self, directory: Path, partitioned: bool, memory_bytes: int = SPOOL_MEMORY_BYTES) -> None:
        self.directory = directory
        self.partitioned = partitioned
        self.memory_bytes = memory_bytes
        self._pieces: dict[int, list[pa.Table]] = defaultdict(list)
        self._buffered = 0
        self._writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        self.rows = 0

    def add(self, chunk: int, rows: pa.Table) -> None:
        """Rows of one chunk (NUNIQ; -1 for a replicated table)."""
        if rows.num_rows == 0:
            return
        self.rows += rows.num_rows
        self._pieces[chunk].append(rows)
        self._buffered += rows.nbytes
        if self._buffered > self.memory_bytes:
            self._spill()

    def _spill(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for key, pieces in self._pieces.items():
            writer = self._writers.get(key)
            if writer is None:
                writer = ipc.new_stream(str(self.directory / f"{key}.arrow"), pieces[0].schema)
                self._writers[key] = writer
            for piece in pieces:
                writer.write_table(piece)
        self._pieces.clear()
        self._buffered = 0

    def chunks(self) -> Iterator[tuple[int, int, pa.Table]]:
        """(order, pixel, rows sorted by _healpix_29) of each chunk, one at a time, in `_healpix_29` order
        of the chunks' pixels (so a shard that stores a table's chunks one after another, as PostgreSQL's
        heap does, has them in that order without sorting them again)."""
        for writer in self._writers.values():
            writer.close()
        for key in sorted(set(self._pieces) | set(self._writers), key=_first_healpix_29):
            parts = []
            if key in self._writers:
                path = self.directory / f"{key}.arrow"
                with pa.memory_map(str(path)) as source:
                    parts.append(ipc.open_stream(source).read_all())
                path.unlink()
            parts += self._pieces.pop(key, [])
            rows = pa.concat_tables(parts)
            if not self.partitioned:
                yield REPLICATED_CHUNK[0], REPLICATED_CHUNK[1], rows
                continue
            order, pixel = from_nuniq(key)
            h29 = rows["_healpix_29"].to_numpy()
            if (h29[1:] < h29[:-1]).any():  # pieces of several batches (each sorted): merged by a sort
                rows = rows.sort_by("_healpix_29")
            yield order, pixel, rows
        self._writers.clear()


def _first_healpix_29(key: int) -> int:
    """The first `_healpix_29` of a chunk (NUNIQ; a replicated table's -1 sorts first)."""
    if key < 0:
        return -1
    order, pixel = from_nuniq(key)
    return int(pixel) << (2 * (29 - int(order)))


class IndexSpool:
    """The (id, chunk, healpix_29) rows a load adds to a director index (or a child's index of orphans)."""

    def __init__(self, directory: Path, unique: bool, memory_rows: int = INDEX_MEMORY_ROWS) -> None:
        self.directory = directory
        self.unique = unique
        self.memory_rows = memory_rows
        self._pieces: list[pa.Table] = []
        self._runs: list[Path] = []
        self.rows = 0

    def add(self, index: pa.Table | None) -> None:
        if index is None or index.num_rows == 0:
            return
        self._pieces.append(index)
        self.rows += index.num_rows
        if sum(p.num_rows for p in self._pieces) > self.memory_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pieces:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        run = self.directory / f"index-run-{len(self._runs)}.parquet"
        pq.write_table(pa.concat_tables(self._pieces), run, compression="lz4")
        self._runs.append(run)
        self._pieces = []

    def write(
        self, path: Path, id_column: str, merge_with: Sequence[Path] = (), table_name: str = "the table"
    ) -> bool:
        """Write the index sorted by id (refusing duplicate ids of a director); False when it is empty.

        With `merge_with` (the table's committed index files), the file written holds their rows too, so a
        table keeps one index file however many loads it has (a lookup reads one row group per id); a
        director id already in them is refused, before anything of the load is stored."""
        if self.rows == 0:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self._runs and not merge_with:
            index = pa.concat_tables(self._pieces).sort_by("id")
            if self.unique and len(index) > 1:
                ids = index["id"]
                self._refuse_duplicates(int(pc.sum(pc.equal(ids[1:], ids[:-1])).as_py() or 0), id_column)
            pq.write_table(index, path, row_group_size=INDEX_ROW_GROUP_ROWS, compression="lz4")
            return True
        self._flush()
        with duckdb.connect() as conn:  # out of core: DuckDB spills its sort to its temporary directory
            conn.execute("SET temp_directory = ?", [str(self.directory / "duckdb.tmp")]).fetchall()
            conn.execute("SET memory_limit = ?", [INDEX_SORT_MEMORY]).fetchall()
            runs = [str(r) for r in self._runs]
            earlier = [str(p) for p in merge_with]
            if self.unique:
                row = conn.execute(
                    "SELECT count(*) - count(DISTINCT id) FROM read_parquet(?)", [runs]
                ).fetchone()
                self._refuse_duplicates(int(row[0]) if row else 0, id_column)
            if self.unique and earlier:
                self._refuse_loaded(conn, runs, earlier, id_column, table_name)
            tmp = path.with_suffix(".tmp")
            conn.cursor().read_parquet(runs + earlier).order("id").write_parquet(
                str(tmp), compression="lz4", row_group_size=INDEX_ROW_GROUP_ROWS
            )
            tmp.replace(path)
        return True

    def _refuse_duplicates(self, duplicates: int, id_column: str) -> None:
        if self.unique and duplicates:
            raise LoadError(f"{duplicates} duplicate values of {id_column} in the files")

    @staticmethod
    def _refuse_loaded(
        conn: duckdb.DuckDBPyConnection, runs: list[str], earlier: list[str], id_column: str, table: str
    ) -> None:
        """An error when ids of this load are already in the table (a director's ids are unique)."""
        row = conn.execute(  # the table's ids probe a hash of the load's (usually the smaller side)
            "SELECT count(*), min(id) FROM read_parquet(?) WHERE id IN (SELECT id FROM read_parquet(?))",
            [earlier, runs],
        ).fetchone()
        if row and row[0]:
            raise LoadError(
                f"{row[0]} values of {id_column} (first {row[1]}) are already in {table} from an earlier "
                "load; a director's ids are unique, so nothing of this load was stored"
            )


class PositionSpool:
    """The `_healpix_29` of each batch, computed by the pass that counts a first load's sky (`SkyCounts`),
    kept for the pass that places the rows so positions are computed once: in memory up to a budget, then
    as .npy files."""

    def __init__(self, directory: Path, memory_rows: int = POSITION_MEMORY_ROWS) -> None:
        self.directory = directory
        self.memory_rows = memory_rows
        self._batches: list[np.ndarray | Path] = []
        self._held = 0

    def add(self, h29: np.ndarray) -> None:
        if self._held + len(h29) <= self.memory_rows:
            self._batches.append(h29)
            self._held += len(h29)
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"positions-{len(self._batches)}.npy"
        np.save(path, h29)
        self._batches.append(path)

    def __iter__(self) -> Iterator[np.ndarray]:
        while self._batches:
            batch = self._batches.pop(0)
            if isinstance(batch, Path):
                values = np.load(batch)
                batch.unlink()
                yield values
            else:
                yield batch
