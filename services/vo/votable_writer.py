"""The one results-VOTable writer of DMS (TAP sync and async, SCS, SIA, DataLink, `dms query --format
votable`): TABLEDATA or BINARY2, written batch by batch with astropy.io.votable.

A result is an Arrow table; rows are rendered ``BATCH_ROWS`` at a time, so writing a million-row result
holds the (columnar) Arrow result and one rendered batch, never the whole document or a Python object per
cell. Field types are decided once, from the Arrow schema and the whole result (a list column is a
fixed-size array only when every row has the same length), so every batch is encoded by the same FIELDs.

DALI status rules: every result RESOURCE carries ``<INFO name="QUERY_STATUS" value="OK"/>`` before its
table and, when MAXREC cut it short, ``<INFO name="QUERY_STATUS" value="OVERFLOW"/>`` after it.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io.votable import exceptions as votable_exceptions
from astropy.io.votable import from_table
from astropy.io.votable.tree import Info, VOTableFile
from astropy.table import MaskedColumn, Table

from dms.errors import DMSError
from dms.query.output import unique_names
from dms.services.vo.result_stream import ResultStream, ResultTruncated, rebatched
from dms.services.vo.tap_schema import Column

log = logging.getLogger(__name__)

VOTABLE_VERSION = "1.4"
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
#: Rows rendered at a time: large enough for astropy's C TABLEDATA writer to dominate, small enough that
#: one rendered batch stays a few megabytes.
BATCH_ROWS = 20_000
# Where the rows go in the document astropy writes for one batch, per serialization.
_DATA_MARKERS = {
    "tabledata": (b"<TABLEDATA>", b"</TABLEDATA>"),
    "binary2": (b'<STREAM encoding="base64">', b"</STREAM>"),
}


def to_astropy(table: pa.Table, widths: Mapping[str, int | None] | None = None) -> Table:
    """An Arrow table as an astropy Table: nulls become masks, text UTF-8 bytes (VOTable char), timestamps
    ISO strings, lists arrays of doubles or longs. `widths` (column -> fixed length, or None for variable)
    decides the list columns; by default it is computed from `table` itself."""
    result = Table()
    widths = list_widths(table) if widths is None else widths
    # two result columns of one name (SELECT o.objectId, s.objectId) are both kept, under unique names
    for name, column in zip(unique_names(table.column_names), table.columns, strict=True):
        kind = column.type
        values = column.to_pylist()
        mask = np.array([v is None for v in values], dtype=bool)
        data: np.ndarray
        if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
            data = _text([v.isoformat() if v is not None else "" for v in values])
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            # integer lists (a HEALPix cell list) stay integers, VOTable long; the rest are doubles
            element: type = np.int64 if pa.types.is_integer(kind.value_type) else float
            missing = 0 if element is np.int64 else np.nan
            width = widths.get(name)
            if width is not None:
                data = np.array([v if v is not None else [missing] * width for v in values], dtype=element)
                data = data.reshape(len(values), width)
            else:
                data = np.empty(len(values), dtype=object)
                for i, v in enumerate(values):  # masked cells: BINARY2 writes each element's null flag
                    cell = v if v is not None else []
                    data[i] = np.ma.MaskedArray(cell, mask=np.zeros(len(cell), bool), dtype=element)
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


def list_widths(table: pa.Table) -> dict[str, int | None]:
    """For each list column (by its unique name): its length when every non-null row has the same one
    (a fixed-size VOTable array, e.g. a DALI point), else None (variable length). Computed in Arrow."""
    widths: dict[str, int | None] = {}
    for name, column in zip(unique_names(table.column_names), table.columns, strict=True):
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            continue
        lengths = pc.drop_null(pc.list_value_length(column))
        if len(lengths) == 0:
            widths[name] = 2
            continue
        bounds = pc.min_max(lengths)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        widths[name] = low if low == high else None
    return widths


def _text(values: list[str]) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    width = max((len(v) for v in encoded), default=1) or 1
    return np.array(encoded, dtype=f"S{width}")


def result_chunks(
    result: pa.Table | ResultStream,
    columns: Mapping[str, Column] | None = None,
    *,
    overflow: bool = False,
    serialization: str = "tabledata",
    infos: Mapping[str, str] | None = None,
    datalink: tuple[str, str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[bytes]:
    """A results VOTable as successive pieces of the document, rendered one batch of rows at a time.

    `result` is a table (`overflow` says whether MAXREC cut it) or a stream (which says so itself).
    `columns` (lower-case name -> TAP_SCHEMA column) supplies units, UCDs and descriptions. `datalink` =
    (column, DataLink service URL) adds a service descriptor linking each row's `column` value (its publisher
    DID) to that service (DataLink 1.1 section 4).

    If reading or rendering the rows fails after the document began, it still ends well-formed: the rows
    sent so far, then ``<INFO name="QUERY_STATUS" value="ERROR">`` with the message after the table (DALI
    1.1 section 4.4.1), and :class:`ResultTruncated` is raised (a sync response stops there; an async job
    ends in ERROR). A failure before the first piece gives an error document instead of a result.
    """
    if serialization not in _DATA_MARKERS:
        raise ValueError(f"serialization {serialization!r}: valid are {', '.join(_DATA_MARKERS)}")
    stream = ResultStream.of_table(result, overflow) if isinstance(result, pa.Table) else result
    known = result if isinstance(result, pa.Table) else stream.table
    if (
        serialization == "tabledata"
        and datalink is None
        and known is not None
        and known.num_rows > 0
        and _plain(known.schema)
    ):
        # numbers and booleans only: the rows are written around astropy's frame
        yield from _plain_chunks(known, columns or {}, stream.overflow, infos or {}, batch_rows)
        return
    try:
        whole = known
        if whole is None and stream.has_lists():  # fixed or variable arrays are decided from every row
            whole = stream.read_all()
            stream = ResultStream.of_table(whole, stream.overflow)
        widths = list_widths(whole) if whole is not None else {}
        describe = _Describer(stream.schema, columns or {}, infos or {}, datalink, widths)
        batches = rebatched(stream.batches, batch_rows)
        first = next(batches, None)
        document = describe.document(stream.schema.empty_table() if first is None else first, serialization)
    except Exception as exc:
        stream.close()
        yield error_document(_message(exc))
        raise ResultTruncated(_message(exc)) from exc
    start, end = _DATA_MARKERS[serialization]
    if first is None:  # astropy writes no DATA element for an empty table
        yield _finish(document, stream.overflow, describe.linked)
        return
    head, rest = document.split(start, 1)
    data, tail = rest.rsplit(end, 1)
    yield head + start
    carry = b""
    try:
        if serialization == "tabledata":
            # each batch's rows as astropy indents them, without the newline and indentation around them
            rows = data.rstrip(b" ")
            indent = data[len(rows) :]
            yield rows
            for batch in batches:
                more = _between(describe.document(batch, serialization), start, end)
                yield more[1:].rstrip(b" ")
            yield indent
        else:
            # BINARY2 is one base64 stream: re-encode across batches, carrying the bytes that do not fill a
            # 3-byte group, so no padding appears mid-stream.
            carry = base64.b64decode(data)
            for batch in batches:
                raw = base64.b64decode(_between(describe.document(batch, serialization), start, end))
                whole = carry + raw
                cut = len(whole) - len(whole) % 3
                yield base64.b64encode(whole[:cut]) + b"\n"
                carry = whole[cut:]
            yield base64.b64encode(carry)
    except Exception as exc:
        stream.close()
        message = _message(exc)
        # whole rows only were sent: close the data where it stopped, the status says the rest is missing
        yield (base64.b64encode(carry) if serialization == "binary2" else b"\n") + _finish(
            end + tail, False, describe.linked, error=message
        )
        raise ResultTruncated(message) from exc
    yield _finish(end + tail, stream.overflow, describe.linked)


def _message(exc: Exception) -> str:
    """What a client is told of a failure: a query error's message; of anything else, only its kind."""
    if isinstance(exc, DMSError):
        return str(exc)
    log.error("a result failed while it was written", exc_info=exc)
    return f"internal error: {type(exc).__name__}"


def error_document(message: str) -> bytes:
    """A VOTable that only says the query failed, and why (DALI 1.1 section 4.4.1)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<VOTABLE version="{VOTABLE_VERSION}" xmlns="{VOTABLE_NS}">\n<RESOURCE type="results">\n'
        f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>\n</RESOURCE>\n</VOTABLE>\n'
    ).encode()


def result_votable(
    table: pa.Table,
    columns: Mapping[str, Column] | None = None,
    *,
    overflow: bool = False,
    serialization: str = "tabledata",
    infos: Mapping[str, str] | None = None,
    datalink: tuple[str, str] | None = None,
) -> bytes:
    """A (small) results VOTable as one document; large results should go through :func:`result_chunks`
    or :func:`write_votable`."""
    return b"".join(
        result_chunks(
            table, columns, overflow=overflow, serialization=serialization, infos=infos, datalink=datalink
        )
    )


def write_votable(
    target: Path | BinaryIO,
    table: pa.Table,
    columns: Mapping[str, Column] | None = None,
    **options: object,
) -> int:
    """Write a results VOTable to a file (or binary stream) batch by batch; returns the bytes written.
    `options` are those of :func:`result_chunks`."""
    if isinstance(target, Path):
        with target.open("wb") as sink:
            return write_votable(sink, table, columns, **options)
    written = 0
    for chunk in result_chunks(table, columns, **options):  # type: ignore[arg-type]
        target.write(chunk)
        written += len(chunk)
    return written


_PLAIN_CELLS = ("int8", "int16", "int32", "int64", "float", "double", "bool")
"""Arrow types whose TABLEDATA cells :func:`_plain_chunks` writes itself (as astropy writes them)."""
_FRAMES: OrderedDict[Hashable, tuple[bytes, bytes]] = OrderedDict()
_FRAMES_SIZE = 256
_FRAMES_LOCK = threading.Lock()


def _plain(schema: pa.Schema) -> bool:
    return all(str(f.type) in _PLAIN_CELLS for f in schema)


def _plain_chunks(
    table: pa.Table,
    columns: Mapping[str, Column],
    overflow: bool,
    infos: Mapping[str, str],
    batch_rows: int,
) -> Iterator[bytes]:
    """The document of a result of numbers and booleans only: astropy's FIELDs and frame, written once
    per column set (and metadata, INFOs, which columns have nulls), around rows written here as
    astropy's TABLEDATA writer writes them (its per-cell Python costs milliseconds per hundred rows)."""
    first = table.slice(0, batch_rows)
    key = (
        table.schema,
        tuple(column.null_count > 0 for column in first.columns),
        tuple(columns.get(name.lower()) for name in table.column_names),
        tuple(infos.items()),
    )
    with _FRAMES_LOCK:
        frame = _FRAMES.get(key)
        if frame is not None:
            _FRAMES.move_to_end(key)
    if frame is None:
        document = _Describer(table.schema, columns, infos, None, {}).document(first, "tabledata")
        start, end = _DATA_MARKERS["tabledata"]
        head, rest = document.split(start, 1)
        tail = rest.rsplit(end, 1)[1]
        frame = (head + start + b"\n", b"    " + end + tail)
        with _FRAMES_LOCK:
            _FRAMES[key] = frame
            while len(_FRAMES) > _FRAMES_SIZE:
                _FRAMES.popitem(last=False)
    yield frame[0]
    for offset in range(0, table.num_rows, batch_rows):
        yield _plain_rows(table.slice(offset, batch_rows))
    yield _finish(frame[1], overflow, None)


def _plain_rows(batch: pa.Table) -> bytes:
    cells = [_plain_cells(column) for column in batch.columns]
    rows = ["     <TR>\n" + "".join(row) + "     </TR>\n" for row in zip(*cells, strict=True)]
    return "".join(rows).encode()


def _plain_cells(column: pa.ChunkedArray) -> list[str]:
    """One column's cells as astropy writes them: an empty cell for a null, T/F, integers in decimal,
    floating point as numpy prints the value (without a trailing ".0"), NaN, +InF and -InF."""
    kind = column.type
    valid = column.is_valid().to_pylist()
    if pa.types.is_boolean(kind):
        texts = ["T" if v else "F" for v in column.fill_null(False).to_pylist()]
    elif pa.types.is_integer(kind):
        texts = [str(v) for v in column.fill_null(0).to_pylist()]
    else:
        texts = [_float_text(v) for v in column.fill_null(0).to_numpy()]
    return [
        f"      <TD>{text}</TD>\n" if ok else "      <TD/>\n" for text, ok in zip(texts, valid, strict=True)
    ]


def _float_text(value: np.floating) -> str:
    if np.isfinite(value):
        text = str(value)
        return text[:-2] if text.endswith(".0") else text
    if np.isnan(value):
        return "NaN"
    return "+InF" if value > 0 else "-InF"


class _Describer:
    """Renders one batch as a complete astropy VOTable with the result's field metadata."""

    def __init__(
        self,
        schema: pa.Schema,
        columns: Mapping[str, Column],
        infos: Mapping[str, str],
        datalink: tuple[str, str] | None,
        widths: Mapping[str, int | None],
    ) -> None:
        self.schema = schema
        self.columns = columns
        self.infos = infos
        self.datalink = datalink
        self.widths = widths
        #: the DataLink service and its ID column, once a batch has shown the column is in the result
        self.linked: tuple[str, str] | None = None

    def document(self, batch: pa.Table, serialization: str) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", votable_exceptions.VOWarning)
            votable: VOTableFile = from_table(to_astropy(batch, self.widths))
            votable.version = VOTABLE_VERSION
            resource = votable.resources[0]
            resource.type = "results"
            resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
            for name, value in self.infos.items():
                resource.infos.append(Info(name=name, value=value))
            self._describe_fields(votable)
            buffer = io.BytesIO()
            votable.to_xml(buffer, tabledata_format=serialization)
        return buffer.getvalue()

    def _describe_fields(self, votable: VOTableFile) -> None:
        for vfield, arrow_field in zip(votable.get_first_table().fields, self.schema, strict=True):
            meta = self.columns.get(arrow_field.name.lower())
            if pa.types.is_timestamp(arrow_field.type) or pa.types.is_date(arrow_field.type):
                vfield.xtype = "timestamp"
            if pa.types.is_boolean(arrow_field.type):
                vfield.datatype = "boolean"  # astropy's default, bit, has no null value (VOTable 1.4 sec. 6)
            if pa.types.is_list(arrow_field.type) or pa.types.is_large_list(arrow_field.type):
                # astropy guesses an object column's type from its cells (one cell may look like text)
                width = self.widths.get(vfield.name)
                vfield.datatype = "long" if pa.types.is_integer(arrow_field.type.value_type) else "double"
                vfield.arraysize = "*" if width is None else str(width)
            elif vfield.datatype in ("char", "unicodeChar"):
                vfield.arraysize = "*"
            if self.datalink is not None and vfield.name == self.datalink[0]:
                vfield.ID = "datalink_id"
                self.linked = self.datalink
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


def _between(document: bytes, start: bytes, end: bytes) -> bytes:
    return document.split(start, 1)[1].rsplit(end, 1)[0]


def _finish(
    tail: bytes, overflow: bool, datalink: tuple[str, str] | None, *, error: str | None = None
) -> bytes:
    """The end of the document, with the DataLink service descriptor and the OVERFLOW (or ERROR) status
    after the table."""
    if datalink is not None:
        tail = _with_descriptor(tail, datalink)
    status = b""
    if error is not None:
        status = f'<INFO name="QUERY_STATUS" value="ERROR">{escape(error)}</INFO>\n'.encode()
    elif overflow:
        status = b'<INFO name="QUERY_STATUS" value="OVERFLOW"/>\n'
    if status:
        at = tail.find(b"</RESOURCE>")  # the results resource's end (a DataLink resource follows it)
        tail = tail[:at] + status + tail[at:]
    return tail


def _with_descriptor(tail: bytes, datalink: tuple[str, str]) -> bytes:
    descriptor = (
        '<RESOURCE type="meta" utype="adhoc:service">'
        '<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/DataLink#links-1.1"/>'
        f'<PARAM name="accessURL" datatype="char" arraysize="*" value={quoteattr(datalink[1])}/>'
        '<GROUP name="inputParams"><PARAM name="ID" datatype="char" arraysize="*" value="" '
        'ref="datalink_id"/>'
        "</GROUP></RESOURCE>\n"
    ).encode()
    at = tail.rfind(b"</VOTABLE>")
    return tail[:at] + descriptor + tail[at:]
