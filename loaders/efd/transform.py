"""The transformed EFD: its configuration (``dms.efd_transform_column``) and runs of its stored procedures.

The computation itself is in ``udfs/control/20_efd_transform.sql``; this module validates
configurations (so mistakes are reported before any run, naming the output, topic and field) and
drives incremental runs, once or as a service woken by the loader's ``NOTIFY dms_efd``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from pydantic import BaseModel, Field, ValidationError

from dms.loaders.efd.consdb_config import output_rows
from dms.loaders.efd.errors import EFDTransformError
from dms.loaders.efd.topics import get_topic

log = logging.getLogger(__name__)

TargetTable = Literal["exposure_efd", "visit1_efd", "exposure_efd_unpivoted", "visit1_efd_unpivoted"]
Function = Literal["mean", "stddev", "min", "max", "most_recent_value", "rms_from_polynomial_fit"]
NUMERIC_TYPES = ("double", "float", "long", "int", "boolean")
DEFAULT_INSTRUMENT = "LSSTCam"  # efd_lsstcam holds LSSTCam's exposures


class TransformOutput(BaseModel):
    """One output of the transformed EFD (a row of dms.efd_transform_column)."""

    target_table: TargetTable = Field(description="efd_lsstcam table receiving the output.")
    name: str = Field(max_length=64, description="Column (pivoted tables) or property (unpivoted tables).")
    topic: str = Field(description="Registered EFD topic summarised.")
    fields: list[str] = Field(min_length=1, description="Fields summarised (together, in a pivoted column).")
    function: Function = Field(description="Summary over each exposure's window.")
    function_args: dict[str, Any] = Field(
        default_factory=dict, description='As ConsDB, e.g. {"degree": 4, "fit_basis": "index"}.'
    )
    subset_field: str | None = Field(default=None, description="Only samples with this field ...")
    subset_value: str | None = Field(default=None, description="... equal to this value (or a JSON list).")
    start_offset: float = Field(
        default=0.0, allow_inf_nan=False, description="Hours added to the window's start (ConsDB's)."
    )
    description: str | None = Field(default=None, description="What the output means.")
    datatype: str | None = Field(default=None, description="ConsDB datatype of the output.")
    unit: str | None = Field(default=None, description="Unit of the output.")
    ucd: str | None = Field(default=None, description="UCD of the output.")


def parse_config(data: Any, source: str) -> list[TransformOutput]:
    """Outputs from a parsed configuration document in ConsDB's format (a mapping with `columns`)."""
    return parse_outputs(output_rows(data, source), source)


def parse_outputs(items: Any, source: str) -> list[TransformOutput]:
    """Outputs from a list of rows of dms.efd_transform_column (the Python form, one row per table)."""
    if not isinstance(items, list):
        raise EFDTransformError(f"{source}: expected a list of outputs")
    outputs = []
    for i, item in enumerate(items, start=1):
        try:
            outputs.append(TransformOutput.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise EFDTransformError(f"{source}: output {i}: {problems}") from exc
    return outputs


def read_config(path: Path) -> list[TransformOutput]:
    """Outputs from a YAML (or JSON) configuration file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EFDTransformError(f"cannot read transform configuration {path}: {exc}") from exc
    return parse_config(data, str(path))


def validate_output(conn: psycopg.Connection[Any], output: TransformOutput) -> None:
    """Check an output against the registered topics and the efd_lsstcam tables."""
    label = f"output {output.name} of {output.target_table}"
    topic = get_topic(conn, output.topic)
    if topic is None:
        known = [r[0] for r in conn.execute("SELECT name FROM dms.efd_topic ORDER BY name")]
        raise EFDTransformError(
            f"{label}: unknown topic {output.topic!r}; registered topics: {', '.join(known) or 'none'}"
        )
    for name in output.fields:
        field = topic.field(name)
        if field is None or field.type not in NUMERIC_TYPES:
            what = "has no field" if field is None else f"has a {field.type} field, not a number:"
            raise EFDTransformError(
                f"{label}: topic {topic.name} {what} {name!r}; numeric fields: "
                f"{', '.join(f.name for f in topic.fields if f.type in NUMERIC_TYPES)}"
            )
    if (output.subset_field is None) != (output.subset_value is None):
        raise EFDTransformError(f"{label}: give both subset_field and subset_value, or neither")
    if output.subset_field not in (None, "sal_index") and topic.field(output.subset_field) is None:
        raise EFDTransformError(
            f"{label}: subset field {output.subset_field!r} is not a field of {topic.name}"
        )
    _validate_function_args(output, label)
    if output.subset_value is not None and output.subset_value.startswith("["):
        values = json.loads(output.subset_value)
        if not (isinstance(values, list) and values):
            raise EFDTransformError(f"{label}: subset_value must be a value or a non-empty list of values")
    if not output.target_table.endswith("_unpivoted"):
        if len(output.fields) != 1 and output.function == "rms_from_polynomial_fit":
            raise EFDTransformError(f"{label}: rms_from_polynomial_fit of a pivoted column fits one field")
        exists = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'efd_lsstcam' "
            "AND table_name = %s AND column_name = %s",
            (output.target_table, output.name),
        ).fetchone()
        if exists is None:
            raise EFDTransformError(
                f"{label}: efd_lsstcam.{output.target_table} has no column {output.name!r}"
            )


def _validate_function_args(output: TransformOutput, label: str) -> None:
    """ConsDB's arguments: rms_from_polynomial_fit's degree (0..10) and fit_basis (index or time)."""
    args = output.function_args
    if "order" in args:
        raise EFDTransformError(f"{label}: function_args.order is not ConsDB's; give degree (and fit_basis)")
    if output.function != "rms_from_polynomial_fit":
        return
    degree = args.get("degree", 1)
    if not (isinstance(degree, int) and not isinstance(degree, bool) and 0 <= degree <= 10):
        raise EFDTransformError(f"{label}: function_args.degree must be an integer 0..10, not {degree!r}")
    if args.get("fit_basis", "index") not in ("index", "time"):
        raise EFDTransformError(
            f"{label}: function_args.fit_basis must be index or time, not {args['fit_basis']!r}"
        )


# An output is pending (computed again for the exposures transformed before) when it is new or its
# definition changed; a description or unit change alone changes no value.
_UPSERT = (
    "INSERT INTO dms.efd_transform_column AS c (target_table, name, topic, fields, function, "
    "function_args, subset_field, subset_value, start_offset, description, datatype, unit, ucd, pending) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true) "
    "ON CONFLICT (target_table, name) DO UPDATE SET "
    "topic = EXCLUDED.topic, fields = EXCLUDED.fields, function = EXCLUDED.function, "
    "function_args = EXCLUDED.function_args, subset_field = EXCLUDED.subset_field, "
    "subset_value = EXCLUDED.subset_value, start_offset = EXCLUDED.start_offset, "
    "description = EXCLUDED.description, datatype = EXCLUDED.datatype, unit = EXCLUDED.unit, "
    "ucd = EXCLUDED.ucd, pending = c.pending OR (c.topic, c.fields, c.function, c.function_args, "
    "c.subset_field, c.subset_value, c.start_offset) IS DISTINCT FROM (EXCLUDED.topic, EXCLUDED.fields, "
    "EXCLUDED.function, EXCLUDED.function_args, EXCLUDED.subset_field, EXCLUDED.subset_value, "
    "EXCLUDED.start_offset)"
)


def configure(conn: psycopg.Connection[Any], outputs: list[TransformOutput], *, replace: bool = False) -> int:
    """Store outputs (all validated first; `replace` removes every other output). Returns the count.

    Outputs that are new or changed are pending: the next run computes them for the exposures
    transformed before, too.
    """
    with conn.transaction():
        for output in outputs:
            validate_output(conn, output)
        if replace:
            keep = [[o.target_table, o.name] for o in outputs]
            conn.execute(
                "DELETE FROM dms.efd_transform_column "
                "WHERE NOT jsonb_build_array(jsonb_build_array(target_table, name)) <@ %s::jsonb",
                (json.dumps(keep),),
            )
        for o in outputs:
            conn.execute(
                _UPSERT,
                (
                    o.target_table,
                    o.name,
                    o.topic,
                    json.dumps(o.fields),
                    o.function,
                    json.dumps(o.function_args),
                    o.subset_field,
                    o.subset_value,
                    o.start_offset,
                    o.description,
                    o.datatype,
                    o.unit,
                    o.ucd,
                ),
            )
    return len(outputs)


def list_outputs(conn: psycopg.Connection[Any]) -> list[TransformOutput]:
    """Every configured output, by table and name."""
    rows = conn.execute(
        "SELECT target_table, name, topic, fields, function, function_args, subset_field, subset_value, "
        "start_offset, description, datatype, unit, ucd FROM dms.efd_transform_column "
        "ORDER BY target_table, name"
    ).fetchall()
    keys = list(TransformOutput.model_fields)
    return [TransformOutput.model_validate(dict(zip(keys, row, strict=True))) for row in rows]


def run(
    conn: psycopg.Connection[Any],
    *,
    instrument: str = DEFAULT_INSTRUMENT,
    since: dt.datetime | None = None,
    recompute: bool = False,
) -> tuple[int, int]:
    """One incremental run: (run id, number of exposures transformed). Errors roll the run back.

    New exposures, those with newly stored telemetry in their window, and, when an output is pending or
    `recompute` is asked, every exposure transformed before.
    """
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT * FROM dms.efd_transform_incremental(%s, %s, %s)", (instrument, since, recompute)
            ).fetchone()
    except psycopg.errors.DataError as exc:
        raise EFDTransformError(f"EFD transform failed: {exc.diag.message_primary}") from exc
    except psycopg.errors.SyntaxErrorOrAccessRuleViolation as exc:  # unknown column/field, bad types
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise EFDTransformError(f"EFD transform failed: {exc.diag.message_primary}{hint}") from exc
    assert row is not None
    return int(row[0]), int(row[1])


def transform_exposures(conn: psycopg.Connection[Any], instrument: str, exposure_ids: list[int]) -> int:
    """Transform the given exposures now (whatever was done before); returns how many had a timespan."""
    with conn.transaction():
        row = conn.execute("SELECT dms.efd_transform(%s, %s)", (instrument, exposure_ids)).fetchone()
    assert row is not None
    return int(row[0])


def watch(
    conninfo: str,
    *,
    instrument: str = DEFAULT_INSTRUMENT,
    since: dt.datetime | None = None,
    interval: float = 30.0,
    stop: threading.Event | None = None,
    on_run: Any = None,
) -> None:
    """Service mode: run now, then whenever telemetry is loaded (NOTIFY dms_efd) or every `interval`
    seconds (new exposures do not notify), until `stop` is set."""
    stop = stop or threading.Event()
    with psycopg.connect(conninfo, autocommit=True) as listener, psycopg.connect(conninfo) as worker:
        listener.execute("LISTEN dms_efd")
        while not stop.is_set():
            run_id, count = run(worker, instrument=instrument, since=since)
            log.info("transform run %d: %d exposures", run_id, count)
            if on_run is not None:
                on_run(run_id, count)
            _wait_for_telemetry(listener, interval, stop)


def _wait_for_telemetry(listener: psycopg.Connection[Any], interval: float, stop: threading.Event) -> None:
    """Return after a NOTIFY dms_efd (and the ones right behind it), `interval` seconds, or `stop`."""
    waited = 0.0
    while waited < interval and not stop.is_set():
        if any(True for _ in listener.notifies(timeout=0.5, stop_after=1)):
            for _ in listener.notifies(timeout=0.05):  # a load of many topics notifies once per topic
                pass
            return
        waited += 0.5
