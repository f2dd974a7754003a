"""The shapes of the release tables: Rubin's dp1.yaml (lsst-sdm-schemas), the subset of columns the DRP
fills, with their names and types as dp1.yaml declares them.

One extension: dp1.Source carries `objectId` (the Object it was associated with), the director key that
places a Source on its Object's chunk; DP1 itself links them through its association tables."""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from dms.services.drp.errors import DrpError

RELEASE_TABLES = ("Object", "Source", "ForcedSource", "Visit", "CcdVisit")
EXTENSIONS: dict[str, dict[str, str]] = {"Source": {"objectId": "long"}}
ARROW_TYPES = {
    "long": pa.int64(),
    "int": pa.int32(),
    "short": pa.int16(),
    "byte": pa.int8(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "char": pa.string(),
    "string": pa.string(),
    "text": pa.string(),
    "unicode": pa.string(),
}


@cache
def _dp1_tables() -> dict[str, dict[str, str]]:
    """Every dp1.yaml table's columns, parsed once (the file is large: libyaml's parser when present)."""
    text = resources.files("lsst.sdm.schemas").joinpath("dp1.yaml").read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load(text, Loader=loader)
    return {t["name"]: {c["name"]: c["datatype"] for c in t["columns"]} for t in document["tables"]}


def dp1_columns(table: str) -> dict[str, str]:
    """Column name -> Felis datatype of a dp1.yaml table (plus the DRP's extensions)."""
    tables = _dp1_tables()
    if table not in tables:
        raise DrpError(f"dp1.yaml has no table {table!r}")
    return {**tables[table], **EXTENSIONS.get(table, {})}


def conform(table: str, frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table with dp1.yaml's types; a column dp1.yaml lacks is an error (a typo would
    otherwise become a new column of the release)."""
    declared = dp1_columns(table)
    unknown = [c for c in frame.columns if c not in declared]
    if unknown:
        raise DrpError(f"dp1.{table} has no columns {unknown} (dp1.yaml)")
    arrays, names = [], []
    for column in frame.columns:
        kind = ARROW_TYPES.get(declared[column])
        if kind is None:
            raise DrpError(f"dp1.{table}.{column}: datatype {declared[column]!r} is not one the DRP fills")
        series = frame[column]
        if pa.types.is_floating(kind):
            series = series.astype(np.float64)
        arrays.append(pa.Array.from_pandas(series).cast(kind))
        names.append(column)
    return pa.Table.from_arrays(arrays, names=names)
