"""`dms efd`, `dms qc` and `dms gateway`: telemetry, the transformed EFD, quality control, the gateway."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psycopg

from dms.cli import _friendly_errors, _open, data_dir_option
from dms.errors import DMSError


@contextmanager
def _conn(ctx: click.Context) -> Iterator[psycopg.Connection[Any]]:
    from dms.loaders.efd import db

    with db.connect(_open(ctx)) as conn:
        yield conn


def _json_object(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} must be a JSON object: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter(f'{what} must be a JSON object, e.g. \'{{"band": "r"}}\'')
    return parsed


# ---- dms efd ---------------------------------------------------------------------------------------


@click.group()
def efd() -> None:
    """Engineering and Facility Database: topics, telemetry loading, the transformed EFD."""


@efd.group("topic")
def efd_topic() -> None:
    """Register and list EFD topics."""


@efd_topic.command("add")
@click.argument("name")
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Avro record schema of the topic's fields (JSON or YAML).",
)
@click.option("--kind", type=click.Choice(["telemetry", "event", "command"]), help="Default: from the name.")
@click.option("--retention-days", type=click.IntRange(min=1), help="Drop samples older than this.")
@click.option("--description", help="What the topic carries.")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_topic_add(
    ctx: click.Context,
    name: str,
    schema_path: Path,
    kind: str | None,
    retention_days: int | None,
    description: str | None,
) -> None:
    """Register topic NAME with the fields of an Avro record schema."""
    import yaml

    from dms.loaders.efd.topics import parse_field_schema, register_topic

    fields = parse_field_schema(name, yaml.safe_load(schema_path.read_text()))
    with _conn(ctx) as conn, conn.transaction():
        topic = register_topic(
            conn, name, fields, kind=kind, retention_days=retention_days, description=description
        )
    click.echo(f"registered {topic.name} ({topic.kind}, {len(fields)} fields) in efd.{topic.table_name}")


@efd.command("topics")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_topics(ctx: click.Context) -> None:
    """List the registered topics."""
    from dms.loaders.efd.topics import list_topics

    with _conn(ctx) as conn:
        for name, kind, fields, retention, samples in list_topics(conn):
            keep = f"{retention} d" if retention else "forever"
            click.echo(f"{name:<50} {kind:<9} {fields:>3} fields {samples:>12,} samples  kept {keep}")


@efd.command("load")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "parquet", "csv", "line"]),
    help="Input format (default: from each file's suffix).",
)
@click.option("--topic", help="Topic of every row (for files without a topic column).")
@click.option("--create", is_flag=True, help="Register unknown topics, with fields inferred from the data.")
@click.option("--unordered", is_flag=True, help="Accept samples out of time order (sorted before loading).")
@click.option("--retention", is_flag=True, help="Apply the topics' retention policy after loading.")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_load(
    ctx: click.Context,
    files: tuple[Path, ...],
    fmt: str | None,
    topic: str | None,
    create: bool,
    unordered: bool,
    retention: bool,
) -> None:
    """Load telemetry FILES (one transaction per file: a bad file leaves nothing behind)."""
    from tqdm import tqdm

    from dms.loaders.efd import ingest, topics

    with _conn(ctx) as conn:
        for path in tqdm(files, desc="files", unit="file", disable=len(files) < 2):
            for result in ingest.load_file(
                conn, path, fmt=fmt, topic=topic, create=create, unordered=unordered
            ):
                note = " (new topic)" if result.created else ""
                click.echo(
                    f"{path}: {result.topic}{note}: {result.rows:,} samples, {result.inserted:,} new, "
                    f"{result.first:%Y-%m-%dT%H:%M:%S} .. {result.last:%Y-%m-%dT%H:%M:%S} UTC"
                )
        if retention:
            with conn.transaction():
                for name, partition in topics.apply_retention(conn):
                    click.echo(f"retention: dropped efd.{partition} ({name})")


@efd.command("retention")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_retention(ctx: click.Context) -> None:
    """Drop the daily partitions older than their topic's retention_days."""
    from dms.loaders.efd import topics

    with _conn(ctx) as conn, conn.transaction():
        dropped = topics.apply_retention(conn)
    for name, partition in dropped:
        click.echo(f"dropped efd.{partition} ({name})")
    click.echo(f"{len(dropped)} partition(s) dropped")


@efd.group("config")
def efd_config() -> None:
    """The outputs of the transformed EFD (as in Rubin's ConsDB transformed EFD)."""


@efd_config.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Remove every output not in the file.")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_config_load(ctx: click.Context, path: Path, replace: bool) -> None:
    """Add or update the outputs of a configuration file in ConsDB's format (a `columns` list, as
    ConsDB's config_lsstcam.yaml); all are validated before any is stored. New or changed outputs are
    computed for the exposures already transformed at the next `dms efd transform`."""
    from dms.loaders.efd import transform

    with _conn(ctx) as conn:
        count = transform.configure(conn, transform.read_config(path), replace=replace)
    click.echo(f"{count} output(s) configured from {path}")


@efd_config.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_config_list(ctx: click.Context) -> None:
    """List the configured outputs."""
    from dms.loaders.efd import transform

    with _conn(ctx) as conn:
        for o in transform.list_outputs(conn):
            subset = f" where {o.subset_field} = {o.subset_value}" if o.subset_field else ""
            offset = f", window start {o.start_offset:+g} h" if o.start_offset else ""
            click.echo(
                f"{o.target_table}.{o.name}: {o.function}({', '.join(o.fields)}) of {o.topic}{subset}{offset}"
            )


@efd.command("transform")
@click.option("--instrument", default="LSSTCam", show_default=True, help="Instrument of the exposures.")
@click.option("--since", type=click.DateTime(), help="Only new exposures beginning at or after this (TAI).")
@click.option("--watch", is_flag=True, help="Keep running: transform again whenever telemetry is loaded.")
@click.option(
    "--recompute",
    is_flag=True,
    help="Also compute every output again for the exposures transformed before.",
)
@click.option(
    "--interval",
    type=float,
    default=30.0,
    show_default=True,
    help="With --watch: also look for new exposures this often (seconds).",
)
@data_dir_option
@click.pass_context
@_friendly_errors
def efd_transform(
    ctx: click.Context,
    instrument: str,
    since: dt.datetime | None,
    watch: bool,
    recompute: bool,
    interval: float,
) -> None:
    """Transform new exposures, those whose window received late telemetry, and (for outputs new or
    changed since, or with --recompute) the exposures transformed before, into efd_lsstcam."""
    from dms.loaders.efd import db, transform

    if watch:
        click.echo("watching for telemetry and exposures (Ctrl-C stops)")
        transform.watch(
            db.conninfo(_open(ctx)),
            instrument=instrument,
            since=since,
            interval=interval,
            on_run=lambda run, n: click.echo(f"run {run}: {n} exposure(s) transformed"),
        )
        return
    with _conn(ctx) as conn:
        run_id, count = transform.run(conn, instrument=instrument, since=since, recompute=recompute)
    click.echo(f"run {run_id}: {count} exposure(s) transformed")


# ---- dms qc ----------------------------------------------------------------------------------------


@click.group()
def qc() -> None:
    """Quality control: metrics, thresholds (verify-spec style), measurements and alarms."""


@qc.group("unit")
def qc_unit() -> None:
    """Units the database converts between."""


@qc_unit.command("add")
@click.argument("units", nargs=-1, required=True)
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_unit_add(ctx: click.Context, units: tuple[str, ...]) -> None:
    """Register astropy UNITS (e.g. mmag, 'm / s') for measurements inserted with plain SQL."""
    from dms.loaders.qc.units import register_units

    with _conn(ctx) as conn, conn.transaction():
        for info in register_units(conn, list(units)):
            click.echo(f"{info.unit!r} = {info.scale:g} {info.dimension or '(dimensionless)'}")


@qc.group("metric")
def qc_metric() -> None:
    """Register metrics and insert measurements of them."""


@qc_metric.command("add")
@click.argument("name")
@click.option("--unit", required=True, help="astropy unit string ('' for dimensionless).")
@click.option("--description", required=True, help="What the metric measures.")
@click.option("--reference", help="Document defining the metric.")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_metric_add(ctx: click.Context, name: str, unit: str, description: str, reference: str | None) -> None:
    """Register metric NAME (e.g. validate_drp.PA1)."""
    from dms.loaders.qc import api

    with _conn(ctx) as conn:
        api.add_metric(conn, name, unit, description, reference=reference)
    click.echo(f"metric {name} [{unit}] registered")


@qc_metric.command("insert")
@click.argument("metric")
@click.argument("value", type=float)
@click.option("--unit", help="Unit of VALUE (default: the metric's).")
@click.option(
    "--scope",
    type=click.Choice(["exposure", "visit", "detector", "production"]),
    default="production",
    show_default=True,
)
@click.option("--instrument")
@click.option("--exposure", type=int)
@click.option("--visit", type=int)
@click.option("--detector", type=int)
@click.option("--production")
@click.option("--data-id", help="Further data ID as a JSON object.")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_metric_insert(ctx: click.Context, metric: str, value: float, data_id: str | None, **ids: Any) -> None:
    """Insert a measurement of METRIC; it is checked against the thresholds at once."""
    from dms.loaders.qc import api

    measurement = api.Measurement(metric, value, data_id=_json_object(data_id, "--data-id"), **ids)
    with _conn(ctx) as conn:
        measurement_id = api.insert_measurement(conn, measurement)
        alarms = [a for a in api.list_alarms(conn, active=True) if a["last_measurement_id"] == measurement_id]
    click.echo(f"measurement {measurement_id} stored")
    for alarm in alarms:
        click.echo(f"ALARM {alarm['alarm_id']} [{alarm['severity']}] {alarm['message']}")


@qc.group("threshold")
def qc_threshold() -> None:
    """Thresholds (specifications) measurements are checked against."""


@qc_threshold.command("add")
@click.argument("name")
@click.option("--metric", required=True)
@click.option(
    "--op",
    "operator",
    required=True,
    type=click.Choice(["<", "<=", ">", ">=", "==", "!="]),
    help="The measurement passes if VALUE OP THRESHOLD holds.",
)
@click.option("--value", required=True, type=float)
@click.option("--unit", required=True, help="astropy unit of --value (convertible to the metric's).")
@click.option("--level", required=True, type=click.Choice(["minimum", "design", "stretch"]))
@click.option(
    "--severity", type=click.Choice(["info", "warning", "critical"]), default="warning", show_default=True
)
@click.option("--applies-to", help='Only measurements whose data ID contains this JSON, e.g. {"band": "r"}.')
@click.option("--description")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_threshold_add(
    ctx: click.Context,
    name: str,
    metric: str,
    operator: str,
    value: float,
    unit: str,
    level: str,
    severity: str,
    applies_to: str | None,
    description: str | None,
) -> None:
    """Define threshold NAME on a metric."""
    from dms.loaders.qc import api

    with _conn(ctx) as conn:
        threshold_id = api.add_threshold(
            conn,
            name,
            metric,
            operator,
            value,
            unit,
            level,
            severity=severity,
            applies_to=_json_object(applies_to, "--applies-to"),
            description=description,
        )
    click.echo(f"threshold {threshold_id} {name}: {metric} {operator} {value:g} {unit} ({level}, {severity})")


@qc_threshold.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_threshold_list(ctx: click.Context) -> None:
    """List the thresholds."""
    from dms.loaders.qc import api

    with _conn(ctx) as conn:
        for t in api.list_thresholds(conn):
            state = "" if t["active"] else "  (inactive)"
            where = f" where {json.dumps(t['applies_to'])}" if t["applies_to"] else ""
            click.echo(
                f"{t['name']}: {t['metric']} {t['operator']} {t['value']:g} {t['unit']} "
                f"[{t['level']}, {t['severity']}]{where}{state}"
            )


@qc_threshold.command("remove")
@click.argument("name")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_threshold_remove(ctx: click.Context, name: str) -> None:
    """Remove threshold NAME (deactivated instead if alarms refer to it)."""
    from dms.loaders.qc import api

    with _conn(ctx) as conn:
        click.echo(f"threshold {name}: {api.remove_threshold(conn, name)}")


@qc.command("alarms")
@click.option("--active", is_flag=True, help="Only open (not cleared) alarms.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@data_dir_option
@click.pass_context
@_friendly_errors
def qc_alarms(ctx: click.Context, active: bool, as_json: bool) -> None:
    """List alarms, newest first."""
    from dms.loaders.qc import api

    with _conn(ctx) as conn:
        for a in api.list_alarms(conn, active=active):
            if as_json:
                click.echo(json.dumps(a, default=str))
            else:
                repeats = f" x{a['occurrences']}" if a["occurrences"] > 1 else ""
                click.echo(
                    f"{a['alarm_id']:>6} {a['state']:<9} [{a['severity']}] {a['message']}{repeats} "
                    f"{json.dumps(a['data_id'])}"
                )


# ---- dms gateway -----------------------------------------------------------------------------------


@click.group()
def gateway() -> None:
    """The Telemetry Gateway: QC measurements and alarms pushed to subscribers (Server-Sent Events)."""


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8710, show_default=True)
@data_dir_option
@click.pass_context
@_friendly_errors
def gateway_serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve GET /events (resume with the Last-Event-ID header or ?after=N) until interrupted."""
    from dms.loaders.efd import db
    from dms.services.gateway import server

    deployment = _open(ctx)
    with deployment.connect():
        pass
    server.serve(
        db.conninfo(deployment), host=host, port=port, allow_anonymous=deployment.config.anonymous_access
    )


@gateway.command("tail")
@click.option("--url", default="http://127.0.0.1:8710", show_default=True, help="The gateway.")
@click.option("--after", type=int, help="Resume after this event id (default: only new events).")
@_friendly_errors
def gateway_tail(url: str, after: int | None) -> None:
    """Print events from a gateway as they arrive."""
    import httpx

    from dms.services.gateway import client

    try:
        for event in client.subscribe(url, after=after, timeout=60):
            click.echo(f"{event.event_id} {event.kind} {json.dumps(event.payload)}")
    except httpx.HTTPError as exc:
        raise DMSError(f"gateway {url}: {exc}") from exc
