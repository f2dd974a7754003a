"""QC metrics of prompt processing into the QC tables (dms.qc_measurement), where thresholds raise alarms
and the Telemetry Gateway picks them up.

Per visit: the median over detectors of each payload metric (PSF FWHM, zero point, background, ...), the
number of DiaSources and alerts, and the seconds per step; per detector: each payload metric with the
detector in the data ID. Calibration frames give their statistics (mean, standard deviation, hot pixels).
Metrics are registered on first use, with a unit guessed from the metric's name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg

from dms.deployment import Deployment
from dms.loaders.qc import api
from dms.loaders.qc.errors import QCError
from dms.services.archiver.rows import GENERIC_CLASS, ID_MAX, INSTRUMENT_CLASSES

log = logging.getLogger(__name__)

#: Units by the end of a metric's name.
SUFFIX_UNITS = (
    ("_hot_pixels", ""),  # a count of pixels, not a length
    ("_arcsec", "arcsec"),
    ("_pixels", "pix"),
    ("_pix", "pix"),
    ("_mag", "mag"),
    ("zero_point", "mag"),
    ("_seconds", "s"),
    ("_adu", "adu"),
    ("_electron", "electron"),
)
DESCRIPTIONS = {
    "prompt_n_dia_sources": "DiaSources stored for a visit (or found on one detector).",
    "prompt_n_alerts": "Alerts archived for a visit.",
    "prompt_step_seconds": "Seconds one step of prompt processing took (data_id.step names it).",
    "prompt_visit_seconds": "Seconds from the end of readout to the visit's alerts stored.",
}


def unit_of(metric: str) -> str:
    for suffix, unit in SUFFIX_UNITS:
        if metric.endswith(suffix):
            return unit
    return ""


def connect(deployment: Deployment) -> psycopg.Connection[Any]:
    url = deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True, application_name="dms-prompt-qc")


def ensure_instrument(conn: psycopg.Connection[Any], instrument: str) -> None:
    """Register the instrument (as the archiver would) so visit-scope measurements may name it."""
    class_name, detector_max = INSTRUMENT_CLASSES.get(instrument, (GENERIC_CLASS, 1000))
    conn.execute(
        "INSERT INTO dms.instrument (name, class_name, detector_max, exposure_max, visit_max) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (instrument, class_name, detector_max, ID_MAX, ID_MAX),
    )


def ensure_detector(conn: psycopg.Connection[Any], instrument: str, detector: int) -> None:
    """Register the detector (with the camera's name for it) so detector-scope measurements may name it."""
    from dms.services.archiver.camera import camera

    geometry = camera(instrument)
    known = {d.id: d for d in geometry.detectors.values()} if geometry is not None else {}
    name = known[detector].name if detector in known else f"D{detector:03d}"
    raft, _, in_raft = name.partition("_")
    conn.execute(
        "INSERT INTO dms.detector (instrument, id, full_name, raft, name_in_raft, purpose) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            instrument,
            detector,
            name,
            raft if in_raft else None,
            in_raft or None,
            known[detector].purpose.upper() if detector in known else None,
        ),
    )


def ensure_metric(conn: psycopg.Connection[Any], metric: str) -> None:
    if conn.execute("SELECT 1 FROM dms.qc_metric WHERE name = %s", (metric,)).fetchone():
        return
    description = DESCRIPTIONS.get(metric, f"Prompt processing metric {metric} (from the payload).")
    with contextlib.suppress(QCError):  # registered meanwhile by another process
        api.add_metric(conn, metric, unit_of(metric), description, tags=["prompt"])


def record(
    deployment: Deployment,
    instrument: str,
    visit: int,
    values: Mapping[str, float],
    data_id: Mapping[str, Any] | None = None,
) -> int:
    """Insert visit-scope measurements (metric -> value; NaN skipped); returns how many."""
    return record_many(deployment, instrument, visit, [(m, v, data_id or {}) for m, v in values.items()])


def record_many(
    deployment: Deployment,
    instrument: str,
    visit: int,
    rows: Sequence[tuple[str, float, Mapping[str, Any]]],
) -> int:
    """Insert (metric, value, data_id) measurements of a visit over one connection (NaN values skipped). A
    data ID with a detector makes a detector-scope measurement, so each detector is its own alarm series."""
    written = 0
    with connect(deployment) as conn:
        ensure_instrument(conn, instrument)
        for detector in sorted({int(d["detector"]) for _, _, d in rows if "detector" in d}):
            ensure_detector(conn, instrument, detector)
        for metric in sorted({m for m, _, _ in rows}):
            ensure_metric(conn, metric)
        for metric, value, data_id in rows:
            if value is None or not np.isfinite(float(value)):
                continue
            on_detector: Any = data_id.get("detector")
            api.insert_measurement(
                conn,
                api.Measurement(
                    metric=metric,
                    value=float(value),
                    scope="visit" if on_detector is None else "detector",
                    instrument=instrument,
                    visit=int(visit),
                    detector=None if on_detector is None else int(on_detector),
                    data_id=dict(data_id),
                ),
            )
            written += 1
    return written


def visit_metrics(
    detector_metrics: Mapping[int, Mapping[str, float]], n_dia_sources: int, n_alerts: int
) -> dict[str, float]:
    """The visit's metrics: the median over detectors of each payload metric, and the counts."""
    names = sorted({name for metrics in detector_metrics.values() for name in metrics})
    out: dict[str, float] = {}
    for name in names:
        values = [float(m[name]) for m in detector_metrics.values() if name in m]
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            out[metric_name(name)] = float(np.median(finite))
    out["prompt_n_dia_sources"] = float(n_dia_sources)
    out["prompt_n_alerts"] = float(n_alerts)
    return out


def metric_name(payload_metric: str) -> str:
    return payload_metric if payload_metric.startswith("prompt_") else f"prompt_{payload_metric}"
