"""The calibration registry: master calibrations with validity ranges, chosen by data ID and time.

`certify` registers the masters a CPP job wrote, valid over a range of observation times (TAI); `find`
returns the one to use for an observation: matching type, instrument, detector (and filter for a flat),
valid at that time, the most recently certified when ranges overlap (a re-run supersedes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from dms.services.batch import store
from dms.services.cpp.tasks import CalibrationError

#: The calibration types dms.calibration holds.
MASTER_TYPES = ("bias", "dark", "flat")


@dataclass(frozen=True)
class Calibration:
    calibration_id: int
    calibration_type: str
    instrument: str
    detector: int
    physical_filter: str | None
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    path: str
    checksum: str


def certify(
    conn: psycopg.Connection, job_id: int, valid_from: dt.datetime, valid_until: dt.datetime | None = None
) -> list[int]:
    """Register every master calibration job `job_id` wrote, valid from `valid_from` to `valid_until`."""
    if valid_until is not None and valid_until <= valid_from:
        raise CalibrationError(f"validity range ends ({valid_until}) before it starts ({valid_from})")
    products = [
        v
        for v in store.dataset_values(conn, job_id).values()
        if isinstance(v, dict) and v.get("type") in MASTER_TYPES  # crosstalk, templates: not masters
    ]
    if not products:
        raise CalibrationError(f"job {job_id} wrote no master calibration to certify")
    ids = []
    with conn.transaction():
        for p in products:
            data_id = p["data_id"]
            for key in ("instrument", "detector"):
                if key not in data_id:
                    raise CalibrationError(f"master {p['path']} has no {key} in its data ID {data_id}")
            row = conn.execute(
                "INSERT INTO dms.calibration (calibration_type, instrument, detector, physical_filter, "
                "valid_from, valid_until, path, checksum, n_frames, config_hash, job_id) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING calibration_id",
                (
                    p["type"],
                    data_id["instrument"],
                    int(data_id["detector"]),
                    data_id.get("physical_filter") if p["type"] == "flat" else None,
                    valid_from,
                    valid_until,
                    p["path"],
                    p["checksum"],
                    p["n_frames"],
                    p["config_hash"],
                    job_id,
                ),
            ).fetchone()
            ids.append(int(row[0]))  # type: ignore[index]
    return ids


def find(
    conn: psycopg.Connection, calibration_type: str, data_id: dict[str, Any], when: dt.datetime
) -> Calibration:
    """The calibration to use for an observation of `data_id` (instrument, detector, and physical_filter
    for flats) at `when` (TAI); CalibrationError naming what was looked for otherwise."""
    missing = [k for k in ("instrument", "detector") if k not in data_id]
    if calibration_type == "flat" and "physical_filter" not in data_id:
        missing.append("physical_filter")
    if missing:
        raise CalibrationError(
            f"a {calibration_type} is chosen by {', '.join(missing)}: missing from {data_id}"
        )
    row = conn.execute(
        "SELECT calibration_id, calibration_type, instrument, detector, physical_filter, valid_from, "
        "valid_until, path, checksum FROM dms.calibration "
        "WHERE calibration_type = %s AND instrument = %s AND detector = %s "
        "AND physical_filter IS NOT DISTINCT FROM %s AND valid_from <= %s "
        "AND (valid_until IS NULL OR valid_until > %s) ORDER BY created_at DESC, calibration_id DESC LIMIT 1",
        (
            calibration_type,
            data_id["instrument"],
            int(data_id["detector"]),
            data_id.get("physical_filter") if calibration_type == "flat" else None,
            when,
            when,
        ),
    ).fetchone()
    if row is None:
        raise CalibrationError(
            f"no {calibration_type} for {data_id} valid at {when.isoformat()} (dms.calibration: certify one)"
        )
    return Calibration(*row)
