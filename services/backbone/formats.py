"""File formats of stored datasets, registered by name: how to recognise, write and read each.

FITS reads into an astropy HDUList (fully loaded: the caller may close nothing); Parquet into a pyarrow
Table. A format is chosen from the object handed to `put` or from a file's suffix.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dms.services.backbone.errors import BackboneError


@dataclass(frozen=True)
class Format:
    """One file format: its name (datastore_record.file_format), suffixes, reader and writer."""

    name: str
    suffixes: tuple[str, ...]
    storage_class: str
    formatter: str
    read: Callable[[bytes], Any]
    write: Callable[[Any], bytes]
    accepts: Callable[[Any], bool]


def _read_fits(data: bytes) -> Any:
    from astropy.io import fits

    hdus = fits.HDUList.fromstring(data)
    for hdu in hdus:
        _ = hdu.data  # load now: the bytes are not kept open anywhere
    return hdus


def _write_fits(obj: Any) -> bytes:
    from astropy.io import fits

    if isinstance(obj, fits.PrimaryHDU):
        obj = fits.HDUList([obj])
    elif isinstance(obj, fits.ImageHDU):
        obj = fits.HDUList([fits.PrimaryHDU(), obj])
    buffer = io.BytesIO()
    obj.writeto(buffer, output_verify="exception")
    return buffer.getvalue()


def _accepts_fits(obj: Any) -> bool:
    from astropy.io import fits

    return isinstance(obj, fits.HDUList | fits.PrimaryHDU | fits.ImageHDU)


def _read_parquet(data: bytes) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def _write_parquet(obj: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(obj, pa.Table):
        obj = _astropy_to_arrow(obj)
    buffer = io.BytesIO()
    pq.write_table(obj, buffer)
    return buffer.getvalue()


def _astropy_to_arrow(table: Any) -> Any:
    import numpy as np
    import pyarrow as pa

    return pa.table({name: np.asarray(table[name]) for name in table.colnames})


def _accepts_parquet(obj: Any) -> bool:
    import pyarrow as pa
    from astropy.table import Table

    return isinstance(obj, pa.Table | Table)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "fits",
            (".fits", ".fit", ".fits.gz", ".fits.fz"),
            "FitsHDUList",
            "dms.services.backbone.formats.FitsFormatter",
            _read_fits,
            _write_fits,
            _accepts_fits,
        ),
        Format(
            "parquet",
            (".parquet", ".parq"),
            "ArrowTable",
            "dms.services.backbone.formats.ParquetFormatter",
            _read_parquet,
            _write_parquet,
            _accepts_parquet,
        ),
    )
}


def format_named(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise BackboneError(f"unknown file format {name!r}; known formats: {', '.join(FORMATS)}") from None


def format_for_object(obj: Any) -> Format:
    """The format that writes `obj` (an astropy HDUList/HDU, a pyarrow Table or an astropy Table)."""
    for fmt in FORMATS.values():
        if fmt.accepts(obj):
            return fmt
    raise BackboneError(
        f"cannot store an object of type {type(obj).__name__}: give an astropy HDUList or HDU (FITS), "
        "a pyarrow or astropy Table (Parquet), or a file path"
    )


def format_for_path(path: Path) -> tuple[Format, str]:
    """The format of a file, from its suffix, and the suffix to store it with."""
    name = path.name.lower()
    for fmt in FORMATS.values():
        for suffix in sorted(fmt.suffixes, key=len, reverse=True):
            if name.endswith(suffix):
                return fmt, suffix
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise BackboneError(f"{path}: unknown file type; known suffixes: {known}")
