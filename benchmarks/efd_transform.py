"""EFD transform and QC latency benchmark: the stored procedures against pandas (the ConsDB approach).

    python benchmarks/efd_transform.py [--rows 2000000] [--database-url URL] [--measurements 200]

Runs on a throw-away embedded deployment (pgserver) unless --database-url names an empty database.
Prints, side by side in one run:
* the transform: telemetry rows aggregated into exposures per second by ``dms.efd_transform`` versus
  pandas doing the same per-exposure aggregation (per-exposure slicing as ConsDB's transform does, and a
  vectorised groupby), with and without fetching the telemetry from PostgreSQL into pandas first; the
  results are checked equal;
* QC: the latency from inserting a metric to its alarm being committed (p50, p95), and to a Telemetry
  Gateway subscriber receiving the alarm over HTTP (p50, p95).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.efd import db, ingest, transform
from dms.loaders.efd.topics import Field, register_topic
from dms.loaders.qc import api
from dms.services.gateway import client, server

TOPIC = "lsst.sal.ESS.airTurbulence"
FIELDS = ("sonicTemperature", "speed0", "speed1")
FUNCTIONS = {"mean": "mean", "stddev": "std", "min": "min", "max": "max"}
COLUMNS = {  # efd_lsstcam.exposure_efd columns used as outputs: (function, field)
    "mt_salindex110_sonic_temperature_mean": ("mean", "sonicTemperature"),
    "mt_salindex110_sonic_temperature_stddev": ("stddev", "sonicTemperature"),
    "mt_salindex110_wind_speed_0_mean": ("mean", "speed0"),
    "mt_salindex110_wind_speed_0_stddev": ("stddev", "speed0"),
    "mt_salindex110_wind_speed_0_min": ("min", "speed0"),
    "mt_salindex110_wind_speed_0_max": ("max", "speed0"),
    "mt_salindex110_wind_speed_1_mean": ("mean", "speed1"),
    "mt_salindex110_wind_speed_1_stddev": ("stddev", "speed1"),
    "mt_salindex110_wind_speed_1_min": ("min", "speed1"),
    "mt_salindex110_wind_speed_1_max": ("max", "speed1"),
}
T0_UTC = dt.datetime(2025, 4, 15, 0, 0, 0, tzinfo=dt.UTC)
TAI_MINUS_UTC = 37.0


def telemetry(rows: int, path: Path) -> pd.DataFrame:
    """`rows` samples at 50 Hz of one sensor (salIndex 110), written to Parquet."""
    rng = np.random.default_rng(1)
    t = T0_UTC.timestamp() + np.arange(rows) * 0.02
    frame = pd.DataFrame(
        {"private_efdStamp": t, "salIndex": 110, **{f: rng.normal(10, 3, rows) for f in FIELDS}}
    )
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return frame


def exposures(conn: psycopg.Connection[Any], rows: int) -> pd.DataFrame:
    """Back-to-back 30 s exposures every 34 s over the telemetry's span (TAI timespans)."""
    span = rows * 0.02
    begins = np.arange(0, span - 30, 34.0)
    frame = pd.DataFrame({"id": 2025041500001 + np.arange(len(begins)), "begin": begins})
    with conn.transaction():
        conn.execute(
            "INSERT INTO dms.instrument (name, class_name, detector_max, exposure_max, visit_max) "
            "VALUES ('LSSTCam', 'lsst.obs.lsst.LsstCam', 1000, 1e13, 1e13) ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO dms.physical_filter (instrument, name, band) VALUES ('LSSTCam', 'r_57', 'r') "
            "ON CONFLICT DO NOTHING"
        )
        for day in {(T0_UTC + dt.timedelta(seconds=float(b))).strftime("%Y%m%d") for b in begins}:
            conn.execute(
                "INSERT INTO dms.day_obs (instrument, id) VALUES ('LSSTCam', %s) ON CONFLICT DO NOTHING",
                (int(day),),
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dms.exposure (instrument, id, obs_id, physical_filter, day_obs, seq_num, "
                "exposure_time, "
                "timespan_begin, timespan_end) VALUES ('LSSTCam', %s, %s, 'r_57', %s, %s, 30, %s, %s)",
                [
                    (
                        int(i),
                        f"MC_O_{i}",
                        int((T0_UTC + dt.timedelta(seconds=float(b))).strftime("%Y%m%d")),
                        int(i % 100000),
                        (T0_UTC + dt.timedelta(seconds=float(b) + TAI_MINUS_UTC)).replace(tzinfo=None),
                        (T0_UTC + dt.timedelta(seconds=float(b) + 30 + TAI_MINUS_UTC)).replace(tzinfo=None),
                    )
                    for i, b in zip(frame.id, frame.begin, strict=True)
                ],
            )
    return frame


def pandas_per_exposure(samples: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """ConsDB's shape: for each exposure, select its window's samples and apply each function."""
    times = samples.private_efdStamp.to_numpy()
    start = T0_UTC.timestamp()
    out = {}
    for exposure_id, begin in zip(windows.id, windows.begin, strict=True):
        lo, hi = (
            np.searchsorted(times, start + begin, "left"),
            np.searchsorted(times, start + begin + 30, "right"),
        )
        window = samples.iloc[lo:hi]
        out[exposure_id] = {c: getattr(window[f], FUNCTIONS[fn])() for c, (fn, f) in COLUMNS.items()}
    return pd.DataFrame.from_dict(out, orient="index")


def pandas_vectorised(samples: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """The fastest straightforward pandas: label each sample with its window, then one groupby."""
    times = samples.private_efdStamp.to_numpy() - T0_UTC.timestamp()
    index = np.searchsorted(windows.begin.to_numpy(), times, "right") - 1
    inside = (index >= 0) & (times <= windows.begin.to_numpy()[np.clip(index, 0, None)] + 30)
    grouped = samples[inside].groupby(windows.id.to_numpy()[index[inside]])
    stats = grouped[list(FIELDS)].agg(["mean", "std", "min", "max"])
    return pd.DataFrame({c: stats[(f, FUNCTIONS[fn])] for c, (fn, f) in COLUMNS.items()})


def best_of(runs: int, fn: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def load(conn: psycopg.Connection[Any], rows: int, tmp: Path) -> pd.DataFrame:
    """Register the topic and load `rows` samples, printing the load rate; returns the samples."""
    path = tmp / "telemetry.parquet"
    samples = telemetry(rows, path)
    with conn.transaction():
        register_topic(conn, TOPIC, tuple(Field(f, "double") for f in FIELDS))
    start = time.perf_counter()
    ingest.load_file(conn, path, topic=TOPIC)
    load_s = time.perf_counter() - start
    print(
        f"load:       {rows:>10,} rows in {load_s:6.2f} s = {rows / load_s:>12,.0f} rows/s "
        "(Parquet -> COPY -> partitions)"
    )
    conn.execute("ANALYZE efd.lsst_sal_ess_airturbulence")
    return samples


def stored_outputs(conn: psycopg.Connection[Any]) -> pd.DataFrame:
    rows = conn.execute(f"SELECT exposure_id, {', '.join(COLUMNS)} FROM efd_lsstcam.exposure_efd").fetchall()
    return pd.DataFrame(rows, columns=["id", *COLUMNS]).set_index("id").sort_index()


def bench_transform(conn: psycopg.Connection[Any], info: str, rows: int, tmp: Path) -> None:
    samples = load(conn, rows, tmp)
    windows = exposures(conn, rows)
    outputs = [
        {
            "target_table": "exposure_efd",
            "name": c,
            "topic": TOPIC,
            "fields": [f],
            "function": fn,
            "subset_field": "sal_index",
            "subset_value": "110",
        }
        for c, (fn, f) in COLUMNS.items()
    ]
    transform.configure(conn, transform.parse_outputs(outputs, "benchmark"))
    ids = [int(i) for i in windows.id]
    in_windows = int(
        sum(
            np.searchsorted(samples.private_efdStamp, T0_UTC.timestamp() + b + 30, "right")
            - np.searchsorted(samples.private_efdStamp, T0_UTC.timestamp() + b, "left")
            for b in windows.begin
        )
    )
    db_s, _ = best_of(3, lambda: transform.transform_exposures(conn, "LSSTCam", ids))
    fetch_s, fetched = best_of(1, lambda: _fetch(info))
    loop_s, by_loop = best_of(1, lambda: pandas_per_exposure(fetched, windows))
    vec_s, by_groupby = best_of(3, lambda: pandas_vectorised(fetched, windows))
    stored = stored_outputs(conn)
    for frame in (by_loop, by_groupby):
        np.testing.assert_allclose(
            stored.to_numpy(float), frame.sort_index()[list(COLUMNS)].to_numpy(float), rtol=1e-9
        )
    print(
        f"transform:  {len(ids):,} exposures, {len(COLUMNS)} outputs, "
        f"{in_windows:,} telemetry rows in their windows "
        "(results equal in all three)"
    )
    table = [
        ("stored procedure (dms.efd_transform)", db_s),
        ("pandas per exposure, data in memory", loop_s),
        ("pandas groupby, data in memory", vec_s),
        ("pandas per exposure + fetch from PostgreSQL", loop_s + fetch_s),
        ("pandas groupby + fetch from PostgreSQL", vec_s + fetch_s),
    ]
    for label, seconds in table:
        ratio = seconds / db_s
        print(
            f"  {label:<45} {seconds:7.3f} s {in_windows / seconds:>13,.0f} rows/s   "
            f"x{ratio:5.1f} of the procedure's time"
        )


def _fetch(info: str) -> pd.DataFrame:
    table = "efd.lsst_sal_ess_airturbulence"
    with psycopg.connect(info) as conn, conn.cursor() as cur:
        columns = ", ".join(f'"{f}"' for f in FIELDS)
        cur.execute(
            f"SELECT extract(epoch FROM sample_time)::float8, sal_index, {columns} "
            f"FROM {table} ORDER BY sample_time"
        )
        return pd.DataFrame(cur.fetchall(), columns=["private_efdStamp", "salIndex", *FIELDS])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_qc(conn: psycopg.Connection[Any], info: str, count: int) -> None:
    api.add_metric(conn, "bench.psf_fwhm", "arcsec", "benchmark metric")
    api.add_threshold(conn, "bench.psf_fwhm.design", "bench.psf_fwhm", "<=", 1.2, "arcsec", "design")
    to_alarm: list[float] = []
    sent: dict[int, float] = {}
    received: dict[int, float] = {}
    with server.background(info) as url:
        ready = threading.Event()

        def subscriber() -> None:
            for event in client.subscribe(url, timeout=60, on_open=ready.set):
                if event.kind == "qc_alarm_raised":
                    received[int(event.payload["measurement_id"])] = time.perf_counter()
                if event.kind == "qc_measurement" and event.payload["value"] < 0:
                    return

        thread = threading.Thread(target=subscriber, daemon=True)
        thread.start()
        ready.wait(10)
        for i in range(count):
            value = 1.5 if i % 2 == 0 else 1.0  # every other measurement raises, the next one clears
            start = time.perf_counter()
            measurement_id = api.insert_measurement(
                conn, api.Measurement("bench.psf_fwhm", value, production="p")
            )
            to_alarm.append(time.perf_counter() - start)
            if value > 1.2:
                sent[measurement_id] = start
            time.sleep(0.005)
        api.insert_measurement(conn, api.Measurement("bench.psf_fwhm", -1.0, production="p"))
        thread.join(30)
    raised = [received[m] - t for m, t in sent.items() if m in received]
    alarms = conn.execute("SELECT count(*) FROM dms.qc_alarm").fetchone()[0]
    print(f"QC:         {count} measurements, {alarms} alarms raised (each cleared by the next measurement)")
    print(
        f"  insert -> alarm committed      p50 {1e3 * percentile(to_alarm, 50):6.2f} ms   "
        f"p95 {1e3 * percentile(to_alarm, 95):6.2f} ms   (target p95 < 20 ms)"
    )
    print(
        f"  insert -> gateway subscriber   p50 {1e3 * percentile(raised, 50):6.2f} ms   "
        f"p95 {1e3 * percentile(raised, 95):6.2f} ms   ({len(raised)} alarms over HTTP SSE)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="telemetry rows (default 2,000,000)")
    parser.add_argument("--measurements", type=int, default=200, help="QC measurements (default 200)")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: embedded, temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dms-bench-") as tmp:
        deployment = Deployment.create(Path(tmp) / "dep", database_url=args.database_url)
        try:
            migrate.upgrade(deployment)
            info = db.conninfo(deployment)
            with psycopg.connect(info, autocommit=True) as conn:
                print(
                    f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]}: "
                    f"{deployment.describe_control()}"
                )
                bench_transform(conn, info, args.rows, Path(tmp))
                bench_qc(conn, info, args.measurements)
        finally:
            deployment.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
