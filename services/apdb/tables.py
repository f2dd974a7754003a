"""The APDB tables as Rubin's `apdb.yaml` defines them, with the Arrow type of every column.

Frames given to `Apdb.store` are checked against these definitions (unknown columns and impossible types are
refused, naming the column); frames read back are typed from them, so a round trip returns what was stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pyarrow as pa

from dms.schema import felis_schema

NAMESPACE = "apdb"
HEALPIX_COLUMN = "_healpix_29"

#: Felis datatype -> Arrow type.
ARROW_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "byte": pa.int8(),
    "short": pa.int16(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "char": pa.string(),
    "string": pa.string(),
    "unicode": pa.string(),
    "text": pa.string(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us"),
}


@dataclass(frozen=True)
class ApdbTable:
    """One APDB table: its name, its Arrow schema (Felis columns, then `_healpix_29` where DMS adds it)."""

    name: str
    schema: pa.Schema
    required: tuple[str, ...]  # the NOT NULL columns of apdb.yaml
    spatial: bool

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)


@cache
def apdb_table(name: str) -> ApdbTable:
    """The definition of APDB table `name` (one of DiaObject, DiaObjectLast, DiaSource, DiaForcedSource)."""
    for table in felis_schema("apdb").tables:
        if table.name == name:
            fields = [
                pa.field(column.name, ARROW_TYPES[str(column.datatype)], nullable=bool(column.nullable))
                for column in table.columns
            ]
            required = tuple(f.name for f in fields if not f.nullable)
            fields.append(pa.field(HEALPIX_COLUMN, pa.int64()))
            return ApdbTable(name, pa.schema(fields), required, True)
    raise KeyError(f"apdb.yaml has no table {name!r}")
