"""The QC operations behind `dms qc`: metrics, thresholds, measurements, alarms (psycopg connections)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dms.loaders.qc.errors import QCError, QCUnitError
from dms.loaders.qc.units import check_convertible, register_units

OPERATORS = ("<", "<=", ">", ">=", "==", "!=")
LEVELS = ("minimum", "design", "stretch")
SEVERITIES = ("info", "warning", "critical")
SCOPES = ("exposure", "visit", "detector", "production")
_SCOPE_IDS = {
    "exposure": "an instrument and an exposure",
    "visit": "an instrument and a visit",
    "detector": "an instrument, a detector and an exposure or visit",
    "production": "a production",
}


@dataclass(frozen=True)
class Measurement:
    """A measured value and the data it describes."""

    metric: str
    value: float
    unit: str | None = None  # default: the metric's unit
    scope: str = "production"
    instrument: str | None = None
    exposure: int | None = None
    visit: int | None = None
    detector: int | None = None
    production: str | None = None
    data_id: dict[str, Any] | None = None


def add_metric(
    conn: psycopg.Connection[Any],
    name: str,
    unit: str,
    description: str,
    *,
    reference: str | None = None,
    tags: list[str] | None = None,
) -> None:
    """Register a metric (its unit must be an astropy unit)."""
    with conn.transaction():
        register_units(conn, [unit])
        try:
            conn.execute(
                "INSERT INTO dms.qc_metric (name, unit, description, reference, tags) "
                "VALUES (%s, %s, %s, %s, %s)",
                (name, unit, description, reference, json.dumps(tags or [])),
            )
        except psycopg.errors.UniqueViolation:
            raise QCError(f"metric {name!r} is already registered") from None


def _metric_unit(conn: psycopg.Connection[Any], metric: str) -> str:
    row = conn.execute("SELECT unit FROM dms.qc_metric WHERE name = %s", (metric,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM dms.qc_metric ORDER BY name")]
        raise QCError(f"unknown metric {metric!r}; registered metrics: {', '.join(known) or 'none'}")
    return str(row[0])


def add_threshold(
    conn: psycopg.Connection[Any],
    name: str,
    metric: str,
    operator: str,
    value: float,
    unit: str,
    level: str,
    *,
    severity: str = "warning",
    applies_to: dict[str, Any] | None = None,
    description: str | None = None,
) -> int:
    """Define a threshold "value operator threshold"; returns its id. Units are checked with astropy."""
    for given, allowed, what in (
        (operator, OPERATORS, "operator"),
        (level, LEVELS, "level"),
        (severity, SEVERITIES, "severity"),
    ):
        if given not in allowed:
            raise QCError(f"threshold {name!r}: {what} {given!r} is not one of {', '.join(allowed)}")
    with conn.transaction():
        metric_unit = _metric_unit(conn, metric)
        check_convertible(unit, metric_unit, f"threshold {name!r} on {metric}")
        register_units(conn, [unit])
        try:
            row = conn.execute(
                "INSERT INTO dms.qc_threshold (name, metric, operator, value, unit, level, severity, "
                "applies_to, "
                "description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING threshold_id",
                (
                    name,
                    metric,
                    operator,
                    value,
                    unit,
                    level,
                    severity,
                    json.dumps(applies_to or {}),
                    description,
                ),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise QCError(f"a threshold named {name!r} already exists") from None
    assert row is not None
    return int(row[0])


def remove_threshold(conn: psycopg.Connection[Any], name: str) -> str:
    """Delete a threshold, or deactivate it if alarms refer to it (their history is kept)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT threshold_id, "
            "EXISTS (SELECT 1 FROM dms.qc_alarm a WHERE a.threshold_id = t.threshold_id) "
            "FROM dms.qc_threshold t WHERE name = %s",
            (name,),
        ).fetchone()
        if row is None:
            raise QCError(f"no threshold named {name!r}")
        if row[1]:
            conn.execute("UPDATE dms.qc_threshold SET active = false WHERE threshold_id = %s", (row[0],))
            return "deactivated (it has alarms, which are kept)"
        conn.execute("DELETE FROM dms.qc_threshold WHERE threshold_id = %s", (row[0],))
        return "removed"


def list_thresholds(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT threshold_id, name, metric, operator, value, unit, level, severity, applies_to, active "
            "FROM dms.qc_threshold ORDER BY metric, name"
        ).fetchall()


def insert_measurement(conn: psycopg.Connection[Any], m: Measurement) -> int:
    """Insert a measurement (evaluated against the thresholds by the database); returns its id."""
    if m.scope not in SCOPES:
        raise QCError(f"scope {m.scope!r} is not one of {', '.join(SCOPES)}")
    typed = {
        "instrument": m.instrument,
        "exposure": m.exposure,
        "visit": m.visit,
        "detector": m.detector,
        "production": m.production,
    }
    data_id = {**{k: v for k, v in typed.items() if v is not None}, **(m.data_id or {})}
    try:
        with conn.transaction():
            unit = m.unit if m.unit is not None else _metric_unit(conn, m.metric)
            if m.unit is not None:
                check_convertible(unit, _metric_unit(conn, m.metric), f"measurement of {m.metric}")
                register_units(conn, [unit])
            row = conn.execute(
                "INSERT INTO dms.qc_measurement (metric, value, unit, scope, instrument, exposure, visit, "
                "detector, production, data_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "RETURNING measurement_id",
                (
                    m.metric,
                    m.value,
                    unit,
                    m.scope,
                    m.instrument,
                    m.exposure,
                    m.visit,
                    m.detector,
                    m.production,
                    json.dumps(data_id),
                ),
            ).fetchone()
    except psycopg.errors.CheckViolation as exc:
        raise QCError(
            f"measurement of {m.metric}: scope {m.scope} needs {_SCOPE_IDS[m.scope]} "
            f"({exc.diag.constraint_name or exc.diag.message_primary})"
        ) from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        raise QCError(
            f"measurement of {m.metric}: {exc.diag.message_detail or exc.diag.message_primary}"
        ) from exc
    except psycopg.errors.DataError as exc:
        raise QCUnitError(f"measurement of {m.metric}: {exc.diag.message_primary}") from exc
    assert row is not None
    return int(row[0])


def list_alarms(conn: psycopg.Connection[Any], *, active: bool = False) -> list[dict[str, Any]]:
    """Alarms, newest first; `active` keeps the open ones (raised or acknowledged)."""
    where = sql.SQL("WHERE a.state <> 'cleared'" if active else "")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT a.alarm_id, t.name AS threshold, t.metric, a.severity, a.state, a.occurrences, "
                "a.message, a.data_id, a.series, a.measurement_id, a.last_measurement_id, a.raised_at, "
                "a.cleared_at FROM dms.qc_alarm a JOIN dms.qc_threshold t USING (threshold_id) "
                "{where} ORDER BY a.alarm_id DESC"
            ).format(where=where)
        ).fetchall()
