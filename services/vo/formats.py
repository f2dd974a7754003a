"""RESPONSEFORMAT: the output formats of TAP, SCS and SIA, and how a result is written in each."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from dms.errors import DMSError
from dms.services.vo.errors import ServiceError
from dms.services.vo.result_stream import ResultStream, ResultTruncated, rebatched
from dms.services.vo.tap_schema import Column
from dms.services.vo.votable_writer import result_chunks, result_votable


@dataclass(frozen=True)
class Format:
    mime: str
    aliases: tuple[str, ...]
    extension: str


VOTABLE = Format(
    "application/x-votable+xml",
    ("votable", "votable/td", "text/xml", "application/x-votable+xml;serialization=tabledata"),
    "xml",
)
VOTABLE_B2 = Format(
    "application/x-votable+xml;serialization=BINARY2", ("votable/b2", "votable/binary2"), "xml"
)
CSV = Format("text/csv", ("csv", "text/csv;header=present"), "csv")
TSV = Format("text/tab-separated-values", ("tsv",), "tsv")
JSON = Format("application/json", ("json",), "json")
PARQUET = Format(
    "application/vnd.apache.parquet", ("parquet", "application/x-parquet", "vnd.apache.parquet"), "parquet"
)
FITS = Format("application/fits", ("fits", "image/fits"), "fits")
FORMATS = (VOTABLE, VOTABLE_B2, CSV, TSV, JSON, PARQUET, FITS)


# Every result response says whether MAXREC cut it (VOTable and JSON say it in-band as well; Parquet in its
# key-value metadata; CSV and TSV only here, as a comment line would break pandas' and astropy's readers).
OVERFLOW_HEADER = "X-DMS-Overflow"
PARQUET_STATUS_KEY = b"IVOA.QUERY_STATUS"
_STORED_OVERFLOW = ";x-dms-overflow=true"
TEXT_BATCH_ROWS = 10_000  # rows of CSV, TSV or JSON rendered at a time
PARQUET_BATCH_ROWS = 100_000  # rows of one VOParquet row group


def result_headers(overflow: bool) -> dict[str, str]:
    """The HTTP headers of a result: X-DMS-Overflow: true when the result was cut at MAXREC."""
    return {OVERFLOW_HEADER: "true" if overflow else "false"}


def stored_mime(mime: str, overflow: bool) -> str:
    """The MIME type a stored (async) result is recorded with, remembering whether it overflowed."""
    return mime + _STORED_OVERFLOW if overflow else mime


def served_mime(stored: str | None) -> tuple[str, bool]:
    """(MIME type, overflow) of a stored result, as :func:`stored_mime` recorded them."""
    mime = stored or "application/octet-stream"
    if mime.endswith(_STORED_OVERFLOW):
        return mime[: -len(_STORED_OVERFLOW)], True
    return mime, False


def choose(value: str | None) -> Format:
    """The format RESPONSEFORMAT (or FORMAT) names; default VOTable TABLEDATA."""
    if not value:
        return VOTABLE
    wanted = value.strip().lower().replace(" ", "")
    for fmt in FORMATS:
        if wanted == fmt.mime.lower() or wanted in fmt.aliases:
            return fmt
    names = ", ".join(f.aliases[0] for f in FORMATS)
    raise ServiceError(f"RESPONSEFORMAT {value!r} is not supported; valid: {names} (or their MIME types)")


def render_chunks(
    fmt: Format,
    result: pa.Table | ResultStream,
    columns: Mapping[str, Column] | None = None,
    *,
    overflow: bool = False,
    infos: Mapping[str, str] | None = None,
) -> Iterator[bytes]:
    """The result in `fmt` as successive pieces, batch by batch, so memory stays bounded: VOTable (see
    :mod:`dms.services.vo.votable_writer`), CSV, TSV, JSON and VOParquet (a row group per batch). FITS needs
    every row first (its column widths and row count head the file) and is written whole.

    A failure after the first piece: VOTable and JSON end with the error in-band and raise
    :class:`ResultTruncated`; CSV, TSV and Parquet, which cannot say it, raise the error itself, and the
    HTTP response then ends without its final chunk (an incomplete transfer, never a short result that
    looks whole)."""
    stream = ResultStream.of_table(result, overflow) if isinstance(result, pa.Table) else result
    if fmt in (VOTABLE, VOTABLE_B2):
        serialization = "binary2" if fmt is VOTABLE_B2 else "tabledata"
        yield from result_chunks(stream, columns, serialization=serialization, infos=infos)
    elif fmt in (CSV, TSV):
        yield from _delimited_chunks(stream, "," if fmt is CSV else "\t")
    elif fmt is JSON:
        yield from _json_chunks(stream, columns)
    elif fmt is PARQUET:
        yield from _parquet_chunks(stream, columns)
    else:
        yield render(fmt, stream.read_all(), columns, overflow=stream.overflow, infos=infos)


def _rows(table: pa.Table) -> Iterator[tuple[object, ...]]:
    return zip(*(c.to_pylist() for c in table.columns), strict=True)


def _delimited_chunks(stream: ResultStream, delimiter: str) -> Iterator[bytes]:
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        writer.writerow(stream.schema.names)
        for batch in rebatched(stream.batches, TEXT_BATCH_ROWS):
            for row in _rows(batch):
                writer.writerow(
                    ["" if v is None else " ".join(map(str, v)) if isinstance(v, list) else v for v in row]
                )
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue().encode()
    finally:
        stream.close()


def _json_chunks(stream: ResultStream, columns: Mapping[str, Column] | None) -> Iterator[bytes]:
    """``{"metadata": [...], "data": [...], "overflow": ...}``, the rows a batch at a time; a failure while
    the rows are read ends the document with ``"error": message`` (and no "overflow")."""
    head = json.dumps({"metadata": _json_metadata(stream.schema, columns)})
    yield (head[:-1] + ', "data": [').encode()
    first = True
    try:
        for batch in rebatched(stream.batches, TEXT_BATCH_ROWS):
            rows = ", ".join(json.dumps(list(row), default=str) for row in _rows(batch))
            yield ((", " if not first else "") + rows).encode()
            first = False
    except Exception as exc:
        message = str(exc) if isinstance(exc, DMSError) else f"internal error: {type(exc).__name__}"
        yield f"], {json.dumps('error')}: {json.dumps(message)}}}".encode()
        raise ResultTruncated(message) from exc
    finally:
        stream.close()
    yield f'], "overflow": {json.dumps(stream.overflow)}}}'.encode()


def _json_metadata(schema: pa.Schema, columns: Mapping[str, Column] | None) -> list[dict[str, object]]:
    metadata: list[dict[str, object]] = []
    for field in schema:
        meta = (columns or {}).get(field.name.lower())
        metadata.append(
            {
                "name": field.name,
                "datatype": str(field.type),
                "unit": meta.unit if meta else None,
                "ucd": meta.ucd if meta else None,
            }
        )
    return metadata


def _parquet_chunks(stream: ResultStream, columns: Mapping[str, Column] | None) -> Iterator[bytes]:
    """VOParquet written a row group per batch (the overflow, in the metadata, is known up front)."""
    header = result_votable(stream.schema.empty_table(), columns, overflow=stream.overflow)
    schema = stream.schema.with_metadata(
        {**(stream.schema.metadata or {}), **_parquet_metadata(header, stream.overflow)}
    )
    sink = io.BytesIO()
    try:
        with pq.ParquetWriter(sink, schema) as writer:
            for batch in rebatched(stream.batches, PARQUET_BATCH_ROWS):
                writer.write_table(batch.replace_schema_metadata(schema.metadata))
                yield sink.getvalue()
                sink.seek(0)
                sink.truncate()
        yield sink.getvalue()
    finally:
        stream.close()


def render(
    fmt: Format,
    table: pa.Table,
    columns: Mapping[str, Column] | None = None,
    *,
    overflow: bool = False,
    infos: Mapping[str, str] | None = None,
) -> bytes:
    """The result in `fmt`; VOTable and JSON carry OVERFLOW in-band, Parquet in its schema metadata
    (IVOA.QUERY_STATUS and the embedded VOTable), CSV and TSV cannot (see :data:`OVERFLOW_HEADER`)."""
    if fmt in (VOTABLE, VOTABLE_B2):
        serialization = "binary2" if fmt is VOTABLE_B2 else "tabledata"
        return result_votable(table, columns, overflow=overflow, serialization=serialization, infos=infos)
    if fmt in (CSV, TSV):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="," if fmt is CSV else "\t", lineterminator="\n")
        writer.writerow(table.column_names)
        for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
            writer.writerow(
                ["" if v is None else " ".join(map(str, v)) if isinstance(v, list) else v for v in row]
            )
        return buffer.getvalue().encode()
    if fmt is JSON:
        metadata = _json_metadata(table.schema, columns)
        rows = [list(r) for r in _rows(table)]
        return json.dumps({"metadata": metadata, "data": rows, "overflow": overflow}, default=str).encode()
    if fmt is FITS:
        from dms.services.vo.fits_table import fits_bytes

        return fits_bytes(table, columns, overflow=overflow)
    # VOParquet: Parquet whose key-value metadata carries the VOTable description of the columns.
    return parquet_bytes(table, result_votable(table.slice(0, 0), columns, overflow=overflow), overflow)


def parquet_bytes(table: pa.Table, votable_header: bytes, overflow: bool) -> bytes:
    """VOParquet: the table, its VOTable description and its query status in the key-value metadata."""
    vo_metadata = _parquet_metadata(votable_header, overflow)
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **vo_metadata}), sink)
    return sink.getvalue()


def _parquet_metadata(votable_header: bytes, overflow: bool) -> dict[bytes, bytes]:
    return {
        b"IVOA.VOTable-Parquet.version": b"1.0",
        b"IVOA.VOTable-Parquet.content": votable_header,
        PARQUET_STATUS_KEY: b"OVERFLOW" if overflow else b"OK",
    }
