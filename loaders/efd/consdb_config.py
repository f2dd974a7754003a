"""The transformed EFD's configuration file, in the format of Rubin's ConsDB (``config_lsstcam.yaml``).

ConsDB's format, with ConsDB's meanings: a mapping with a ``columns`` list; each column has a ``name``,
the ``tables`` it goes to (default: all four), ``function`` and ``function_args`` (``degree`` and
``fit_basis`` of rms_from_polynomial_fit, ``ddof`` of stddev), ``datatype``, ``ivoa`` (``unit``,
``ucd``), ``description``, ``packed_series``, optional ``subset_field`` / ``subset_value`` (a value or
a list of values; the subset field is listed among the topic's fields, as ConsDB lists it),
``start_offset`` (hours, signed, added to the exposure's start), ``pre_aggregate_interval`` (e.g.
``1s``) and ``topics`` (one topic with its ``fields``). Each column becomes one output per table.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dms.loaders.efd.errors import EFDTransformError

ConsDBTable = Literal["exposure_efd", "visit1_efd", "exposure_efd_unpivoted", "visit1_efd_unpivoted"]
TABLES: tuple[ConsDBTable, ...] = (
    "exposure_efd",
    "exposure_efd_unpivoted",
    "visit1_efd",
    "visit1_efd_unpivoted",
)
UNPIVOTED = ("exposure_efd_unpivoted", "visit1_efd_unpivoted")
ConsDBFunction = Literal["mean", "stddev", "min", "max", "most_recent_value", "rms_from_polynomial_fit"]
# The keyword arguments each ConsDB summary function takes (ConsDB passes function_args to it).
FUNCTION_ARGS: dict[str, tuple[str, ...]] = {
    "mean": (),
    "stddev": ("ddof",),
    "min": (),
    "max": (),
    "most_recent_value": (),
    "rms_from_polynomial_fit": ("degree", "fit_basis"),
}
SAMPLE_COLUMNS = {"salIndex": "sal_index"}  # ConsDB's field name -> DMS sample-table column
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConsDBField(BaseModel):
    """A field of a topic."""

    name: str = Field(description="Field name, as SAL spells it (e.g. sonicTemperature, salIndex).")


class ConsDBTopic(BaseModel):
    """The topic a column summarises."""

    name: str = Field(description="EFD topic, e.g. lsst.sal.ESS.airTurbulence.")
    fields: list[ConsDBField] = Field(min_length=1, description="Fields read (with the subset field).")


class ConsDBIvoa(BaseModel):
    """IVOA metadata of a column."""

    model_config = ConfigDict(extra="allow")
    unit: str | None = Field(default=None, description="Unit of the output (IVOA/astropy syntax).")
    ucd: str | None = Field(default=None, description="UCD of the output.")


class ConsDBColumn(BaseModel):
    """One column of ConsDB's configuration."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="Column (pivoted) or property (unpivoted) name.")
    tables: list[ConsDBTable] = Field(default=list(TABLES), min_length=1, description="Target tables.")
    store_unpivoted: bool = Field(default=False, description="Only unpivoted tables (ConsDB's check).")
    function: ConsDBFunction = Field(description="Summary over each exposure's window.")
    function_args: dict[str, Any] | None = Field(default=None, description="Arguments of the function.")
    datatype: str = Field(description="Datatype of the output column (float, int, boolean...).")
    unit: str | None = Field(default=None, description="Unit (older ConsDB configurations).")
    store_unit: str | None = Field(default=None, description="Unit the output is stored in, if given.")
    ivoa: ConsDBIvoa | None = Field(default=None, description="IVOA unit and UCD.")
    description: str = Field(description="What the output means.")
    packed_series: bool = Field(description="Whether the fields are a packed time series (refused).")
    subset_field: str | None = Field(default=None, description="Only samples with this field ...")
    subset_value: str | int | float | list[str | int | float] | None = Field(
        default=None, description="... equal to this value (or to one of these)."
    )
    start_offset: float | None = Field(default=None, description="Hours added to the window's start.")
    pre_aggregate_interval: str | None = Field(default=None, description="Bins summarised first (1s).")
    topics: list[ConsDBTopic] = Field(min_length=1, max_length=1, description="The topic summarised.")

    @model_validator(mode="after")
    def _check(self) -> ConsDBColumn:
        if self.store_unpivoted and any(t not in UNPIVOTED for t in self.tables):
            raise ValueError(f"store_unpivoted allows only {', '.join(UNPIVOTED)}, not {self.tables}")
        if self.packed_series:
            raise ValueError("packed_series: True (arrays packed with their own timestamps) is not supported")
        if (self.subset_field is None) != (self.subset_value is None):
            raise ValueError("give both subset_field and subset_value, or neither")
        unknown = sorted(set(self.function_args or {}) - set(FUNCTION_ARGS[self.function]))
        if unknown:
            allowed = ", ".join(FUNCTION_ARGS[self.function]) or "none"
            raise ValueError(f"function_args {unknown} are not arguments of {self.function} ({allowed})")
        if (self.function_args or {}).get("ddof", 1) != 1:
            raise ValueError("stddev: only ddof 1 (the sample standard deviation) is computed")
        if self.pre_aggregate_interval is not None:
            interval_seconds(self.pre_aggregate_interval)
        return self


class ConsDBConfig(BaseModel):
    """ConsDB's configuration file: a version and the columns."""

    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, description="Version of the configuration.")
    columns: list[ConsDBColumn] = Field(description="The outputs.")


def interval_seconds(text: str) -> float:
    """An InfluxDB duration such as 1s, 500ms, 1m in seconds."""
    match = _INTERVAL.match(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"pre_aggregate_interval {text!r} is not a positive duration such as 1s or 500ms")
    return float(match[1]) * _SECONDS[match[2]]


def output_rows(data: Any, source: str) -> list[dict[str, Any]]:
    """The DMS outputs (one per column and table, as dicts of TransformOutput) of a ConsDB document."""
    if not isinstance(data, dict) or "columns" not in data:
        raise EFDTransformError(
            f"{source}: expected ConsDB's configuration: a mapping with a `columns` list (name, tables, "
            "function, function_args, datatype, ivoa, description, packed_series, topics: [{name, "
            "fields: [{name: ...}]}], optional subset_field/subset_value and start_offset in hours)"
        )
    try:
        config = ConsDBConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = list(e["loc"])
            if len(where) >= 2 and where[0] == "columns" and isinstance(where[1], int):
                column = data["columns"][where[1]]
                name = column.get("name") if isinstance(column, dict) else None
                where = [f"column {where[1] + 1} ({name})", *where[2:]]
            problems.append(f"{'.'.join(map(str, where))}: {e['msg']}")
        raise EFDTransformError(f"{source}: {'; '.join(problems)}") from exc
    return [row for column in config.columns for row in _rows(column)]


def _rows(column: ConsDBColumn) -> list[dict[str, Any]]:
    topic = column.topics[0]
    fields = [f.name for f in topic.fields if f.name != column.subset_field]
    args = dict(column.function_args or {})
    args.pop("ddof", None)  # 1, the only one computed
    if column.pre_aggregate_interval is not None and column.function in ("mean", "max", "min"):
        args["pre_aggregate_interval"] = interval_seconds(column.pre_aggregate_interval)
    value = column.subset_value
    subset_value = None if value is None else json.dumps(value) if isinstance(value, list) else str(value)
    subset_field = column.subset_field
    unit = column.store_unit or (column.ivoa.unit if column.ivoa else None) or column.unit
    return [
        {
            "target_table": table,
            "name": column.name,
            "topic": topic.name,
            "fields": fields,
            "function": column.function,
            "function_args": args,
            "subset_field": SAMPLE_COLUMNS.get(subset_field, subset_field) if subset_field else None,
            "subset_value": subset_value,
            "start_offset": column.start_offset or 0.0,
            "description": column.description,
            "datatype": column.datatype,
            "unit": unit,
            "ucd": column.ivoa.ucd if column.ivoa else None,
        }
        for table in column.tables
    ]
