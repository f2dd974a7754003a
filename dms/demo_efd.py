"""The EFD and QC step of `dms demo`: telemetry in, transformed per exposure, a QC alarm raised, cleared."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from dms.deployment import Deployment
from dms.loaders.efd import db, ingest, transform
from dms.loaders.efd.topics import Field, get_topic, register_topic, table_name_for
from dms.loaders.qc import api

TOPIC = "lsst.sal.ESS.airTurbulence"
INSTRUMENT = "LSSTCam"
DAY_OBS = 20250415
FIRST_EXPOSURE = 2025041500101
BEGIN_TAI = dt.datetime(2025, 4, 15, 3, 0, 0)
OUTPUTS = [
    {"name": "mt_salindex110_sonic_temperature_mean", "function": "mean", "fields": ["sonicTemperature"]},
    {"name": "mt_salindex110_sonic_temperature_stddev", "function": "stddev", "fields": ["sonicTemperature"]},
    {"name": "mt_salindex110_wind_speed_0_max", "function": "max", "fields": ["speed0"]},
]


def run_efd_demo(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    """Load sample telemetry, transform three exposures, raise and clear a QC alarm (idempotent)."""
    with db.connect(deployment) as conn:
        _exposures(conn)
        if get_topic(conn, TOPIC) is None:
            with conn.transaction():
                register_topic(
                    conn,
                    TOPIC,
                    (Field("sonicTemperature", "double", "deg_C"), Field("speed0", "double", "m/s")),
                )
        with tempfile.TemporaryDirectory() as tmp:
            (loaded,) = ingest.load_file(conn, _telemetry(Path(tmp) / "airTurbulence.parquet"), topic=TOPIC)
        echo(
            f"EFD: {TOPIC}: {loaded.rows:,} samples loaded ({loaded.inserted:,} new), "
            f"in daily partitions of efd.{table_name_for(TOPIC)}"
        )
        outputs = [
            {
                "target_table": "exposure_efd",
                "topic": TOPIC,
                "subset_field": "sal_index",
                "subset_value": "110",
                **o,
            }
            for o in OUTPUTS
        ]
        transform.configure(conn, transform.parse_outputs(outputs, "demo"))
        transform.run(conn)
        transform.transform_exposures(conn, INSTRUMENT, [FIRST_EXPOSURE + i for i in range(3)])
        for exposure_id, mean, std, gust in conn.execute(
            "SELECT exposure_id, mt_salindex110_sonic_temperature_mean, "
            "mt_salindex110_sonic_temperature_stddev, "
            "mt_salindex110_wind_speed_0_max FROM efd_lsstcam.exposure_efd "
            "WHERE exposure_id = ANY(%s) ORDER BY 1",
            ([FIRST_EXPOSURE + i for i in range(3)],),
        ):
            echo(
                f"  exposure {exposure_id}: air temperature {mean:.2f} ± {std:.2f} C, max wind {gust:.1f} m/s"
            )
        _qc(conn, echo)


def _exposures(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO dms.instrument (name, class_name, detector_max, exposure_max, visit_max) "
            "VALUES (%s, 'lsst.obs.lsst.LsstCam', 1000, 10000000000000, 10000000000000) "
            "ON CONFLICT DO NOTHING",
            (INSTRUMENT,),
        )
        conn.execute(
            "INSERT INTO dms.physical_filter (instrument, name, band) VALUES (%s, 'r_57', 'r') "
            "ON CONFLICT DO NOTHING",
            (INSTRUMENT,),
        )
        conn.execute(
            "INSERT INTO dms.day_obs (instrument, id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (INSTRUMENT, DAY_OBS),
        )
        for i in range(3):
            begin = BEGIN_TAI + dt.timedelta(seconds=40 * i)
            conn.execute(
                "INSERT INTO dms.exposure (instrument, id, obs_id, physical_filter, day_obs, seq_num, "
                "exposure_time, "
                "timespan_begin, timespan_end) VALUES (%s, %s, %s, 'r_57', %s, %s, 30, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (
                    INSTRUMENT,
                    FIRST_EXPOSURE + i,
                    f"MC_O_{DAY_OBS}_{101 + i:06d}",
                    DAY_OBS,
                    101 + i,
                    begin,
                    begin + dt.timedelta(seconds=30),
                ),
            )


def _telemetry(path: Path) -> Path:
    """Two minutes of 10 Hz air-turbulence samples from two sensors (salIndex 110 and 111), seeded."""
    rng = np.random.default_rng(20250415)
    start = (BEGIN_TAI - dt.timedelta(seconds=37 + 10)).replace(tzinfo=dt.UTC).timestamp()
    seconds = np.arange(0, 140, 0.1)
    table = pa.table(
        {
            "private_efdStamp": np.concatenate([start + seconds, start + seconds]),
            "salIndex": np.repeat([110, 111], len(seconds)),
            "sonicTemperature": np.concatenate(
                [
                    11.5 + 0.01 * seconds + rng.normal(0, 0.2, len(seconds)),
                    12.0 + rng.normal(0, 0.2, len(seconds)),
                ]
            ),
            "speed0": np.abs(rng.normal(4, 1.5, 2 * len(seconds))),
        }
    )
    pq.write_table(table, path)
    return path


def _qc(conn: psycopg.Connection[Any], echo: Callable[[str], None]) -> None:
    if conn.execute("SELECT 1 FROM dms.qc_metric WHERE name = 'demo.psf_fwhm'").fetchone() is None:
        api.add_metric(conn, "demo.psf_fwhm", "arcsec", "Median PSF FWHM of an exposure's detectors")
    if conn.execute("SELECT 1 FROM dms.qc_threshold WHERE name = 'demo.psf_fwhm.design'").fetchone() is None:
        api.add_threshold(
            conn, "demo.psf_fwhm.design", "demo.psf_fwhm", "<=", 1.2, "arcsec", "design", severity="critical"
        )
    for exposure, value, unit in ((FIRST_EXPOSURE, 1450.0, "mas"), (FIRST_EXPOSURE + 1, 0.95, "arcsec")):
        api.insert_measurement(
            conn,
            api.Measurement(
                "demo.psf_fwhm", value, unit, scope="exposure", instrument=INSTRUMENT, exposure=exposure
            ),
        )
        alarm = api.list_alarms(conn)[0]
        echo(
            f"QC: demo.psf_fwhm = {value:g} {unit} on exposure {exposure} -> alarm {alarm['alarm_id']} "
            f"{alarm['state']}: {alarm['message']}"
        )
