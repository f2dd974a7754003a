"""Read catalog files into Arrow tables: Parquet, CSV/TSV, FITS binary tables and VOTable."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dms.errors import DMSError


class CatalogFileError(DMSError):
    """A catalog file that cannot be read."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def _read_parquet(path: Path) -> pa.Table:
    return pq.read_table(path)


def _read_csv(path: Path) -> pa.Table:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith((".tsv", ".tab")) else ","
    return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))


def _read_astropy(path: Path, fmt: str) -> pa.Table:
    from astropy.table import Table

    table = Table.read(path, format=fmt)
    arrays = {}
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
    return pa.table(arrays)


READERS: dict[tuple[str, ...], Callable[[Path], pa.Table]] = {
    (".parquet", ".pq"): _read_parquet,
    (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".tab"): _read_csv,
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


def file_checksum(paths: list[Path], extra: str) -> str:
    """SHA-256 over the files' contents and the load options: the identity of a load."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
