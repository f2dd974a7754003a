"""VOTable documents: results (TABLEDATA or BINARY2) with TAP_SCHEMA field metadata, errors, uploads.

Written with astropy.io.votable. DALI status rules: every result RESOURCE carries
``<INFO name="QUERY_STATUS" value="OK"/>`` before its table and, when MAXREC cut it short,
``<INFO name="QUERY_STATUS" value="OVERFLOW"/>`` after it; an error document is a RESOURCE holding only
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
from astropy.io.votable import from_table, parse
from astropy.io.votable.tree import Info, VOTableFile
from astropy.table import MaskedColumn, Table

from dms.query.output import unique_names
from dms.services.vo.errors import ServiceError
from dms.services.vo.tap_schema import Column

VOTABLE_VERSION = "1.4"
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
# Result columns holding DALI geometry arrays, recognised by length where the type alone cannot tell.
MAX_UPLOAD_BYTES = 20_000_000
MAX_UPLOAD_ROWS = 1_000_000


def to_astropy(table: pa.Table) -> Table:
    """An Arrow table as an astropy Table: nulls become masks, text UTF-8 bytes (VOTable char), timestamps
    ISO strings, lists arrays of doubles or longs (variable-length unless all rows have the same length)."""
    result = Table()
    # two result columns of one name (SELECT o.objectId, s.objectId) are both kept, under unique names
    for name, column in zip(unique_names(table.column_names), table.columns, strict=True):
        kind = column.type
        values = column.to_pylist()
        mask = np.array([v is None for v in values], dtype=bool)
        data: np.ndarray
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            data = _text([v.isoformat() if v is not None else "" for v in values])
        elif pa.types.is_list(kind):
            # integer lists (a HEALPix cell list) stay integers, VOTable long; the rest are doubles
            element: type = np.int64 if pa.types.is_integer(kind.value_type) else float
            missing = 0 if element is np.int64 else np.nan
            lengths = {len(v) for v in values if v is not None}
            if len(lengths) <= 1:
                width = lengths.pop() if lengths else 2
                data = np.array([v if v is not None else [missing] * width for v in values], dtype=element)
                data = data.reshape(len(values), width)
            else:
                data = np.empty(len(values), dtype=object)
                for i, v in enumerate(values):
                    data[i] = np.array(v if v is not None else [], dtype=element)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            data = _text([v if v is not None else "" for v in values])
        elif pa.types.is_boolean(kind):
            data = np.array([bool(v) for v in values], dtype=bool)
        else:
            dtype = kind.to_pandas_dtype()
            fill = 0 if np.issubdtype(dtype, np.integer) else np.nan
            data = np.array([fill if v is None else v for v in values], dtype=dtype)
        result[name] = MaskedColumn(data, mask=mask) if mask.any() and data.ndim == 1 else data
    return result


def _text(values: list[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    width = max((len(v) for v in encoded), default=1) or 1
    return np.array(encoded, dtype=f"S{width}")


def result_votable(
    table: pa.Table,
    columns: Mapping[str, Column] | None = None,
    *,
    overflow: bool = False,
    serialization: str = "tabledata",
    infos: Mapping[str, str] | None = None,
    datalink: tuple[str, str] | None = None,
) -> bytes:
    """A results VOTable; `columns` (lower-case name -> TAP_SCHEMA column) supplies units, UCDs, text.

    `datalink` = (column, DataLink service URL) adds a service descriptor that links each row's `column`
    value (its publisher DID) to that service, as DataLink 1.1 section 4 describes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", votable_exceptions.VOWarning)
        votable: VOTableFile = from_table(to_astropy(table))
        votable.version = VOTABLE_VERSION
        resource = votable.resources[0]
        resource.type = "results"
        resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
        for name, value in (infos or {}).items():
            resource.infos.append(Info(name=name, value=value))
        _describe_fields(votable, table, columns or {})
        if datalink is not None:
            for vfield in votable.get_first_table().fields:
                if vfield.name == datalink[0]:
                    vfield.ID = "datalink_id"
        buffer = io.BytesIO()
        votable.to_xml(buffer, tabledata_format=serialization)
    document = buffer.getvalue()
    if datalink is not None and b'ID="datalink_id"' in document:
        descriptor = (
            '<RESOURCE type="meta" utype="adhoc:service">'
            '<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/DataLink#links-1.1"/>'
            f'<PARAM name="accessURL" datatype="char" arraysize="*" value={quoteattr(datalink[1])}/>'
            '<GROUP name="inputParams"><PARAM name="ID" datatype="char" arraysize="*" value="" '
            'ref="datalink_id"/>'
            "</GROUP></RESOURCE>\n"
        ).encode()
        at = document.rfind(b"</VOTABLE>")
        document = document[:at] + descriptor + document[at:]
    if overflow:
        marker = b"</RESOURCE>"
        at = document.rfind(marker)
        document = document[:at] + b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n' + document[at:]
    return document


def _describe_fields(votable: VOTableFile, table: pa.Table, columns: Mapping[str, Column]) -> None:
    for vfield, arrow_field in zip(votable.get_first_table().fields, table.schema, strict=True):
        meta = columns.get(arrow_field.name.lower())
        if pa.types.is_timestamp(arrow_field.type):
            vfield.xtype = "timestamp"
        if pa.types.is_boolean(arrow_field.type):
            vfield.datatype = "boolean"  # astropy's default, bit, has no null value (VOTable 1.4 sec. 6)
        if vfield.datatype in ("char", "unicodeChar"):
            vfield.arraysize = "*"
        if meta is None:
            continue
        if meta.ucd:
            vfield.ucd = meta.ucd
        if meta.unit:
            vfield.unit = meta.unit
        if meta.utype:
            vfield.utype = meta.utype
        if meta.xtype and not vfield.xtype:
            vfield.xtype = meta.xtype
        if meta.description:
            vfield.description = meta.description


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
