"""RESPONSEFORMAT=fits: a result as a FITS binary table (astropy), units from TAP_SCHEMA, NULLs masked."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from dms.services.vo.tap_schema import Column


def _column(values: pa.ChunkedArray) -> Any:
    kind = values.type
    if pa.types.is_boolean(kind) and values.null_count:  # astropy writes no NULL for a masked logical column
        values = pc.cast(values, pa.int16())
        kind = values.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        filled = pc.fill_null(values, False if pa.types.is_boolean(kind) else 0).to_numpy()
        if values.null_count == 0:
            return filled
        if pa.types.is_floating(kind):  # NULL is NaN in a FITS float column
            return np.where(values.is_null().to_numpy(zero_copy_only=False), np.nan, filled)
        return MaskedColumn(filled, mask=values.is_null().to_numpy(zero_copy_only=False))
    text = [
        "" if v is None else " ".join(map(str, v)) if isinstance(v, list) else str(v)
        for v in values.to_pylist()
    ]
    return np.array(text, dtype=f"U{max(1, *(len(t) for t in text))}" if text else "U1")


def fits_bytes(
    table: pa.Table, columns: Mapping[str, Column] | None = None, *, overflow: bool = False
) -> bytes:
    """A primary HDU and one BINTABLE with the result's columns; OVERFLOW = T when MAXREC cut it."""
    out = Table()
    for name, values in zip(table.column_names, table.columns, strict=True):
        out[name] = _column(values)
        meta = (columns or {}).get(name.lower())
        if meta is not None and meta.unit:
            unit = u.Unit(meta.unit, format="vounit", parse_strict="silent")
            if not isinstance(unit, u.UnrecognizedUnit):
                out[name].unit = unit
    hdu = fits.table_to_hdu(out)
    hdu.header["OVERFLOW"] = (overflow, "true when the result was cut at MAXREC")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()
