"""Read catalog files into Arrow tables: Parquet, CSV/TSV, FITS binary tables and VOTable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dms.errors import DMSError

_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".tab")


class CatalogFileError(DMSError):
    """A catalog file that cannot be read."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def _read_parquet(path: Path) -> pa.Table:
    return pq.read_table(path)


def _read_csv(path: Path) -> pa.Table:
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=_csv_delimiter(path)))


def _read_astropy(path: Path, fmt: str) -> pa.Table:
    from astropy.table import Table

    table = Table.read(path, format=fmt)
    ucds = _fits_ucds(path) if fmt == "fits" else {}
    arrays, fields = {}, []
    for name in table.colnames:
        column = table[name]
        if column.ndim > 1:
            raise CatalogFileError(path, f"column {name!r} holds arrays; only scalar columns can be loaded")
        data = np.ma.asarray(column)
        values = data.data
        if values.dtype.kind in "SU":
            values = values.astype(str)
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("="))
        mask = np.ma.getmaskarray(data) if np.ma.is_masked(data) else None
        arrays[name] = pa.array(values, mask=mask)
        described = described_field(
            name, arrays[name].type, column.unit, column.meta.get("ucd") or ucds.get(name)
        )
        fields.append(described)
    return pa.table(arrays, schema=pa.schema(fields))


def described_field(name: str, kind: pa.DataType, unit: object, ucd: object) -> pa.Field:
    """An Arrow field carrying the file's unit and UCD as field metadata (keys ``unit`` and ``ucd``, as a
    Parquet file may carry them too): `dms load` records them for TAP_SCHEMA."""
    metadata = {}
    if unit is not None and str(unit):
        metadata[b"unit"] = (
            unit.to_string(format="vounit").encode() if hasattr(unit, "to_string") else str(unit).encode()
        )
    if ucd:
        metadata[b"ucd"] = str(ucd).encode()
    return pa.field(name, kind, metadata=metadata or None)


def _fits_ucds(path: Path) -> dict[str, str]:
    """TUCDn keywords of the first table extension (astropy's table reader keeps TUNIT, not TUCD)."""
    from astropy.io import fits

    with fits.open(path) as hdus:
        table = next((h for h in hdus if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
        if table is None:
            return {}
        header = table.header
        return {
            str(header[f"TTYPE{i}"]): str(header[f"TUCD{i}"])
            for i in range(1, int(header.get("TFIELDS", 0)) + 1)
            if f"TTYPE{i}" in header and f"TUCD{i}" in header
        }


READERS: dict[tuple[str, ...], Callable[[Path], pa.Table]] = {
    (".parquet", ".pq"): _read_parquet,
    _CSV_SUFFIXES: _read_csv,
    (".fits", ".fit", ".fits.gz", ".fts"): lambda p: _read_astropy(p, "fits"),
    (".vot", ".votable", ".xml", ".vot.gz"): lambda p: _read_astropy(p, "votable"),
}


def read_catalog_file(path: Path) -> pa.Table:
    """The rows of a catalog file, chosen by its extension; a clear error if it cannot be read."""
    name = path.name.lower()
    if not path.is_file():
        raise CatalogFileError(path, "no such file")
    for suffixes, reader in READERS.items():
        if name.endswith(suffixes):
            try:
                return reader(path)
            except CatalogFileError:
                raise
            except Exception as exc:  # the libraries raise many types for corrupt files
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CatalogFileError(path, f"cannot be read as {suffixes[0][1:]}: {problem}") from exc
    known = ", ".join(s for suffixes in READERS for s in suffixes)
    raise CatalogFileError(path, f"unknown file type; use one of {known}")


BATCH_ROWS = 1_000_000
"""Rows per batch a load reads at a time: large enough for vectorised work, small enough to bound memory."""


def catalog_file_schema(path: Path) -> pa.Schema:
    """The columns of a catalog file, read from its metadata or first block only (FITS and VOTable files are
    read whole: their readers do not stream)."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")) and path.is_file():
            return pq.read_schema(path)
        if name.endswith(_CSV_SUFFIXES) and path.is_file():
            with _open_csv(path) as reader:
                return reader.schema
    except Exception as exc:  # the libraries raise many types for corrupt files
        raise CatalogFileError(path, f"cannot be read as {_kind(name)}: {_first_line(exc)}") from exc
    return read_catalog_file(path).schema


def iter_catalog_file(
    path: Path, columns: list[str] | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The rows of a catalog file batch by batch (Parquet row groups and CSV blocks are streamed, so a file
    is never whole in memory), optionally only some `columns`; a clear error if it cannot be read."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")) and path.is_file():
            yield from _parquet_batches(path, columns, batch_rows)
            return
        if name.endswith(_CSV_SUFFIXES) and path.is_file():
            with _open_csv(path) as reader:
                for batch in reader:
                    yield batch.select(columns) if columns is not None else batch
            return
    except CatalogFileError:
        raise
    except Exception as exc:
        raise CatalogFileError(path, f"cannot be read as {_kind(name)}: {_first_line(exc)}") from exc
    table = read_catalog_file(path)
    yield from (table.select(columns) if columns is not None else table).to_batches(batch_rows)


def _parquet_batches(path: Path, columns: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows one row group at a time, without pre-buffering: `iter_batches` keeps memory that
    grows with the file (1.3 GB after 10M rows of the scale benchmark's file, 0.25 GB this way). A file with
    huge row groups is read by `iter_batches`, which splits them."""
    parquet = pq.ParquetFile(path, pre_buffer=False)
    metadata = parquet.metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    if any(size > 4 * batch_rows for size in sizes):
        yield from parquet.iter_batches(batch_size=batch_rows, columns=columns)
        return
    for i in range(len(sizes)):
        yield from parquet.read_row_group(i, columns=columns).to_batches(max_chunksize=batch_rows)


def _open_csv(path: Path) -> pacsv.CSVStreamingReader:
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=64 << 20),  # types are inferred from the first block
        parse_options=pacsv.ParseOptions(delimiter=_csv_delimiter(path)),
    )


def _csv_delimiter(path: Path) -> str:
    return "\t" if path.name.lower().removesuffix(".gz").endswith((".tsv", ".tab")) else ","


def _kind(name: str) -> str:
    return "csv" if name.endswith(_CSV_SUFFIXES) else "parquet"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def file_checksum(paths: list[Path], extra: str) -> str:
    """SHA-256 over the files' contents and the load options: the identity of a load."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
