"""VOTable documents: errors, INFO-only documents, and reading uploads; results are written by
:mod:`dms.services.vo.votable_writer` (re-exported here).

DALI status rules: an error document is a RESOURCE holding only
``<INFO name="QUERY_STATUS" value="ERROR">message</INFO>``.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import NoReturn
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
from astropy.io.votable import exceptions as votable_exceptions
from astropy.io.votable import parse
from astropy.io.votable.tree import VOTableFile

from dms.services.vo.errors import ServiceError
from dms.services.vo.votable_writer import (
    VOTABLE_NS,
    VOTABLE_VERSION,
    result_chunks,
    result_votable,
    to_astropy,
    write_votable,
)

__all__ = ["result_chunks", "result_votable", "to_astropy", "write_votable"]

MAX_UPLOAD_BYTES = 20_000_000
MAX_UPLOAD_ROWS = 1_000_000


def error_votable(message: str) -> bytes:
    """A DALI error document."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="{VOTABLE_VERSION}" '
        f'xmlns="{VOTABLE_NS}">\n'
        f'<RESOURCE type="results">\n<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    ).encode()


def cone_error_votable(message: str) -> bytes:
    """An error document for Simple Cone Search: SCS 1.03 section 3 wants an INFO named "Error" directly
    under VOTABLE (pyvo's SCS client looks there); the RESOURCE keeps the DALI QUERY_STATUS as well."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="{VOTABLE_VERSION}" '
        f'xmlns="{VOTABLE_NS}">\n<INFO name="Error" value={quoteattr(message)}/>\n'
        f'<RESOURCE type="results">\n<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n'
        "</RESOURCE>\n</VOTABLE>\n"
    ).encode()


def info_votable(infos: Mapping[str, str], params: Mapping[str, str] | None = None) -> bytes:
    """A VOTable holding INFOs only (e.g. a service's self-description for FORMAT=METADATA)."""
    body = "".join(f"<INFO name={quoteattr(k)} value={quoteattr(v)}/>\n" for k, v in infos.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="{VOTABLE_VERSION}" '
        f'xmlns="{VOTABLE_NS}">\n'
        f'<RESOURCE type="results">\n{body}</RESOURCE>\n</VOTABLE>\n'
    ).encode()


def read_upload(name: str, content: bytes) -> pa.Table:
    """An uploaded VOTable's first table as Arrow; a malformed or oversized document is a ServiceError."""
    if len(content) > MAX_UPLOAD_BYTES:
        raise ServiceError(
            f"upload {name}: {len(content):,} bytes is more than the limit of {MAX_UPLOAD_BYTES:,}"
        )
    _refuse_references(name, content)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", votable_exceptions.VOWarning)
            document = parse(io.BytesIO(content), verify="ignore")
            _check_inline(name, document)
            element = document.get_first_table()
            xtypes = {f.name: (f.xtype or "").lower() for f in element.fields}
            table = element.to_table(use_names_over_ids=True)
    except ServiceError:
        raise
    except Exception as exc:  # astropy raises many types for malformed XML / VOTable
        raise ServiceError(f"upload {name}: not a readable VOTable ({type(exc).__name__}: {exc})") from exc
    if len(table) > MAX_UPLOAD_ROWS:
        raise ServiceError(
            f"upload {name}: {len(table):,} rows is more than the limit of {MAX_UPLOAD_ROWS:,}"
        )
    arrays, names = [], []
    for column in table.columns.values():
        data = column.data
        mask = np.ma.getmaskarray(data) if np.ma.isMaskedArray(data) else None
        values = np.ma.getdata(data)
        if values.dtype.kind in "SU" or values.dtype == object:
            items = [
                v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
                for v in values.tolist()
            ]
            array = pa.array(items, type=pa.string(), mask=mask)
            if xtypes.get(column.name) == "timestamp":
                array = _timestamps(column.name, array)
        elif values.ndim > 1:
            array = pa.array([list(map(float, v)) for v in values], type=pa.list_(pa.float64()), mask=mask)
        else:
            array = pa.array(values, mask=mask)
        arrays.append(array)
        names.append(column.name)
    return pa.Table.from_arrays(arrays, names=names)


def _refuse_references(name: str, content: bytes) -> None:
    """Refuse, before astropy reads it, a document whose data lies elsewhere: astropy follows a STREAM's
    href (file:, http:, ...) and would read server files or URLs for the client. Only inline data is
    accepted; so are no DTDs or entities (they can name files too)."""

    def refuse(message: str) -> NoReturn:
        raise ServiceError(f"upload {name}: {message}")

    def start(tag: str, attributes: dict[str, str]) -> None:
        local = tag.rsplit(" ", 1)[-1].rsplit(":", 1)[-1].upper()
        if local == "STREAM" and any(
            k.rsplit(" ", 1)[-1].rsplit(":", 1)[-1].lower() == "href" for k in attributes
        ):
            refuse(
                "a STREAM with an href (data outside the document) is not accepted; send the data inline "
                "(TABLEDATA, or BINARY/BINARY2 with base64 content)"
            )
        if local == "FITS":
            refuse("FITS data in a VOTable upload is not accepted; send TABLEDATA, BINARY or BINARY2")

    scanner = expat.ParserCreate(namespace_separator=" ")
    scanner.StartElementHandler = start
    scanner.StartDoctypeDeclHandler = lambda *_: refuse("a VOTable upload may not hold a DOCTYPE")
    scanner.EntityDeclHandler = lambda *_: refuse("a VOTable upload may not declare entities")
    try:
        scanner.Parse(content, True)
    except expat.ExpatError as exc:
        refuse(f"not a readable VOTable (malformed XML: {exc})")


def _check_inline(name: str, document: VOTableFile) -> None:
    """The parsed tree agrees: every table's data was inline TABLEDATA, BINARY or BINARY2."""
    for table in document.iter_tables():
        if table.format not in ("tabledata", "binary", "binary2"):
            raise ServiceError(f"upload {name}: {table.format} data in a VOTable upload is not accepted")


def _timestamps(name: str, array: pa.Array) -> pa.Array:
    """An xtype=timestamp column (ISO 8601 text) as Arrow timestamps, so results keep the xtype."""
    from datetime import datetime

    try:
        parsed = [None if not v else datetime.fromisoformat(v.replace("Z", "")) for v in array.to_pylist()]
    except ValueError as exc:
        raise ServiceError(f"upload column {name}: not an ISO 8601 timestamp ({exc})") from exc
    return pa.array(parsed, type=pa.timestamp("us"))
