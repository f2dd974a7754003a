"""Alert packets: Rubin's Avro alert schema (the newest that lsst-alert-packet ships), framed for the wire.

Each packet is one DiaSource with its DiaObject, up to 12 months of previous DiaSources and forced sources,
and the science, template and difference cutouts as FITS, serialised with fastavro against the schema that
`lsst.alert.packet` defines, behind the Confluent wire header Rubin's alert stream uses: a zero magic byte and
the schema id as a 4-byte big-endian integer (`Schema.get_schema_id()`: 1101 for v11.1), so community brokers
decode DMS's packets exactly as they decode Rubin's.

Rows come from the APDB as frames; a column the schema does not have is left out, a field the frame does not
have is null where the schema allows it, and a missing required field is an error naming it.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fastavro
import pandas as pd
import pyarrow as pa
from lsst.alert.packet import Schema

from dms.errors import DMSError

MAGIC = 0
HEADER = struct.Struct(">bI")


class AlertPacketError(DMSError):
    """A packet that cannot be made or read (the message names the field or the byte that is wrong)."""


@dataclass(frozen=True)
class AlertSchema:
    """One version of Rubin's alert schema, parsed once."""

    name: str
    schema_id: int
    parsed: Any = field(repr=False)
    definitions: dict[str, dict[str, Any]] = field(repr=False)  # record -> its Avro definition
    fields: dict[str, tuple[str, ...]] = field(repr=False)  # record -> its field names
    required: dict[str, tuple[str, ...]] = field(repr=False)  # record -> fields without null or default

    @property
    def version(self) -> str:
        return self.name.split(".")[1].removeprefix("v").replace("_", ".")


@cache
def latest_schema() -> AlertSchema:
    """The newest alert schema that the installed lsst-alert-packet ships."""
    schema = Schema.from_file()
    definition = schema.definition
    parsed = fastavro.parse_schema(definition)
    definitions: dict[str, dict[str, Any]] = {}
    fields: dict[str, tuple[str, ...]] = {}
    required: dict[str, tuple[str, ...]] = {}
    for record in _records(definition):
        short = record["name"].rsplit(".", 1)[-1]
        definitions[short] = record
        fields[short] = tuple(f["name"] for f in record["fields"])
        required[short] = tuple(f["name"] for f in record["fields"] if not _nullable(f))
    name = f"{definition.get('namespace', '')}.{definition['name']}".strip(".")
    return AlertSchema(name, schema.get_schema_id(), parsed, definitions, fields, required)


def _records(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "record":
            yield node
            for f in node["fields"]:
                yield from _records(f["type"])
        elif node.get("type") == "array":
            yield from _records(node["items"])
    elif isinstance(node, list):
        for option in node:
            yield from _records(option)


def _nullable(avro_field: dict[str, Any]) -> bool:
    kind = avro_field["type"]
    return "default" in avro_field or (isinstance(kind, list) and "null" in kind)


@dataclass(frozen=True)
class Cutouts:
    """The three FITS stamps of one alert (bytes of a FITS file each, or None)."""

    science: bytes | None = None
    template: bytes | None = None
    difference: bytes | None = None


def rows(frame: pd.DataFrame | None, record: str, schema: AlertSchema) -> list[dict[str, Any]]:
    """The rows of an APDB frame as Avro records of `record` (DiaSource, DiaObject, DiaForcedSource)."""
    if frame is None or len(frame) == 0:
        return []
    names = schema.fields[record]
    missing = [n for n in schema.required[record] if n not in frame.columns]
    if missing:
        raise AlertPacketError(f"{record}: the alert schema {schema.version} requires columns {missing}")
    present = [n for n in names if n in frame.columns]
    # Arrow turns NaN into null (the APDB's NULL) and numpy scalars into Python values in one pass
    table = pa.Table.from_pandas(frame[present], preserve_index=False)
    out = table.to_pylist()
    absent = [n for n in names if n not in frame.columns]
    if absent:
        for row in out:
            row.update(dict.fromkeys(absent))
    return out


@dataclass
class AlertInputs:
    """What goes into the packets of one batch: the DiaSources, and by DiaObject id the rest."""

    sources: list[dict[str, Any]]
    objects: dict[int, dict[str, Any]]
    history: dict[int, list[dict[str, Any]]]
    forced: dict[int, list[dict[str, Any]]]


def gather(
    dia_sources: pd.DataFrame,
    dia_objects: pd.DataFrame | None,
    previous_sources: pd.DataFrame | None = None,
    previous_forced: pd.DataFrame | None = None,
    schema: AlertSchema | None = None,
) -> AlertInputs:
    """Group APDB frames by DiaObject for `alert_records` (previous sources exclude the alert's own)."""
    schema = schema or latest_schema()
    objects = {int(r["diaObjectId"]): r for r in rows(dia_objects, "diaObject", schema)}
    history: dict[int, list[dict[str, Any]]] = {}
    for r in rows(_previous(previous_sources, dia_sources), "diaSource", schema):
        if r.get("diaObjectId") is not None:
            history.setdefault(int(r["diaObjectId"]), []).append(r)
    forced: dict[int, list[dict[str, Any]]] = {}
    for r in rows(previous_forced, "diaForcedSource", schema):
        forced.setdefault(int(r["diaObjectId"]), []).append(r)
    return AlertInputs(rows(dia_sources, "diaSource", schema), objects, history, forced)


def _previous(history: pd.DataFrame | None, current: pd.DataFrame) -> pd.DataFrame | None:
    """The history without the batch's own DiaSources (an APDB read after the store returns them too)."""
    if history is None or len(history) == 0:
        return history
    return history[~history["diaSourceId"].isin(current["diaSourceId"])]


def alert_records(inputs: AlertInputs, cutouts: Sequence[Cutouts] | None = None) -> list[dict[str, Any]]:
    """One alert record per DiaSource of `inputs` (cutouts in the same order, if given)."""
    records = []
    for k, source in enumerate(inputs.sources):
        object_id = source.get("diaObjectId")
        key = -1 if object_id is None else int(object_id)
        stamps = cutouts[k] if cutouts is not None else Cutouts()
        previous = inputs.history.get(key)
        records.append(
            {
                "diaSourceId": source["diaSourceId"],
                "diaSource": source,
                "prvDiaSources": previous or None,
                "prvDiaForcedSources": inputs.forced.get(key) or None,
                "diaObject": inputs.objects.get(key),
                "cutoutDifference": stamps.difference,
                "cutoutScience": stamps.science,
                "cutoutTemplate": stamps.template,
            }
        )
    return records


def serialize(record: dict[str, Any], schema: AlertSchema | None = None) -> bytes:
    """One packet: the Confluent header, then the record in Avro binary."""
    schema = schema or latest_schema()
    buffer = io.BytesIO()
    buffer.write(HEADER.pack(MAGIC, schema.schema_id))
    try:
        fastavro.schemaless_writer(buffer, schema.parsed, record)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise AlertPacketError(
            f"alert for DiaSource {record.get('diaSourceId')}: does not fit schema {schema.version}: {exc}"
        ) from None
    return buffer.getvalue()


def deserialize(packet: bytes, schema: AlertSchema | None = None) -> dict[str, Any]:
    """The record of one packet, checking its header names this schema."""
    schema = schema or latest_schema()
    if len(packet) < HEADER.size:
        raise AlertPacketError(f"packet of {len(packet)} bytes is shorter than the 5-byte Confluent header")
    magic, schema_id = HEADER.unpack_from(packet)
    if magic != MAGIC:
        raise AlertPacketError(f"packet starts with byte {magic}, not the Confluent magic byte 0")
    if schema_id != schema.schema_id:
        raise AlertPacketError(
            f"packet was written with schema id {schema_id}; this reader has {schema.schema_id} "
            f"({schema.version})"
        )
    try:
        record = fastavro.schemaless_reader(io.BytesIO(packet[HEADER.size :]), schema.parsed, None)
    except (EOFError, ValueError, TypeError, IndexError) as exc:
        raise AlertPacketError(f"packet body is not a valid {schema.version} alert: {exc}") from None
    if not isinstance(record, dict):
        raise AlertPacketError("packet body is not an alert record")
    return record
