"""ConsDB's LSSTCam transformed-EFD configuration, loaded as ConsDB writes it, computed on realistic
summit telemetry and compared with a pandas computation of ConsDB's own definitions (its Transform and
Summary: window [begin + start_offset h, end] in UTC, rows with any NaN dropped, subsets compared as
text, fields of a pivoted column flattened, polynomial fitted on the sample index, the last row's
first field for most_recent_value, InfluxDB-style 1 s bins for pre_aggregate_interval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml

from dms.loaders.efd import ingest, transform
from dms.loaders.efd.topics import Field, register_topic
from tests.efd_support import add_exposure, efd_conn, efd_deployment

__all__ = ["efd_conn", "efd_deployment"]

CONFIG = Path(__file__).parent / "data" / "consdb" / "config_lsstcam.yaml"
TAI_MINUS_UTC = pd.Timedelta(seconds=37)
NIGHT = pd.Timestamp("2025-05-01T03:10:00", tz="UTC")  # an LSSTCam night (UTC)
# (exposure id, start after NIGHT in seconds, exposure time): 30 s science visits and a 15 s one.
EXPOSURES = [(2025043000101, 0.0, 30.0), (2025043000102, 34.5, 30.0), (2025043000103, 71.2, 15.0)]


def telemetry(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Samples of each topic around the exposures, at their CSCs' rates, with NaNs where ESS has them."""
    out: dict[str, pd.DataFrame] = {}
    t = NIGHT - pd.Timedelta(seconds=20) + pd.to_timedelta(np.arange(0, 130, 0.05), "s")  # 20 Hz
    s = (t - NIGHT).total_seconds().to_numpy()
    enc = {"time": t}
    for axis, start, rate in (("azimuth", 181.7, 0.0041), ("elevation", 62.3, 0.0027)):
        for head in (0, 1):  # tracking: a slow drift, a 0.2 Hz oscillation and encoder noise
            enc[f"{axis}EncoderAbsolutePosition{head}"] = (
                start + rate * s + 2e-5 * s**2 / 100 + 3e-4 * np.sin(2 * np.pi * 0.2 * s + head)
            ) + rng.normal(0, 2e-5, len(s))
    out["lsst.sal.MTMount.encoder"] = pd.DataFrame(enc)
    rows = []
    for sal_index in (110, 111):  # two Gill anemometers; 110 is TMA-GillLabJack01
        for ti in NIGHT - pd.Timedelta(seconds=15) + pd.to_timedelta(np.arange(0, 120, 1.0), "s"):
            rows.append((ti, sal_index, rng.normal(9.4, 0.3), abs(rng.normal(3.1, 1.2))))
    out["lsst.sal.ESS.airTurbulence"] = pd.DataFrame(
        rows, columns=["time", "salIndex", "sonicTemperature", "speed0"]
    )
    acc = NIGHT - pd.Timedelta(seconds=10) + pd.to_timedelta(np.arange(0, 110, 1.0), "s")
    frame = pd.DataFrame({"time": acc, "salIndex": 104})
    values = rng.normal(0, 0.012, (len(acc), 400))
    frame = pd.concat(
        [frame, pd.DataFrame(values, columns=[f"accelerationX{i}" for i in range(400)])], axis=1
    )
    out["lsst.sal.ESS.accelerometer"] = frame
    rows = []
    for sal_index, base in ((101, 7.9), (111, 8.6), (112, 8.9), (113, 9.2)):
        for i, ti in enumerate(
            NIGHT - pd.Timedelta(seconds=8) + pd.to_timedelta(np.arange(0, 100, 2.0), "s")
        ):
            value = np.nan if (sal_index == 112 and i % 7 == 3) else base + rng.normal(0, 0.05)
            rows.append((ti + pd.Timedelta(milliseconds=sal_index), sal_index, value))
    out["lsst.sal.ESS.temperature"] = pd.DataFrame(rows, columns=["time", "salIndex", "temperatureItem0"])
    m2 = NIGHT - pd.Timedelta(seconds=5) + pd.to_timedelta(np.arange(0, 95, 0.2), "s")
    forces = rng.normal(0, 1, (len(m2), 72)) + np.linspace(180, 260, 72)
    out["lsst.sal.MTM2.axialForce"] = pd.concat(
        [pd.DataFrame({"time": m2}), pd.DataFrame(forces, columns=[f"applied{i}" for i in range(72)])], axis=1
    )
    # M1M3 at an irregular ~10 Hz: the 1 s bins hold different numbers of samples.
    gaps = rng.uniform(0.05, 0.15, 1000).cumsum()
    m1m3 = NIGHT - pd.Timedelta(seconds=3) + pd.to_timedelta(gaps[gaps < 95], "s")
    z = (
        rng.normal(0, 4, (len(m1m3), 156))
        + np.linspace(-400, 400, 156)
        + np.linspace(0, 30, len(m1m3))[:, None]
    )
    out["lsst.sal.MTM1M3.appliedAzimuthForces"] = pd.concat(
        [pd.DataFrame({"time": m1m3}), pd.DataFrame(z, columns=[f"zForces{i}" for i in range(156)])], axis=1
    )
    # Wavefront-error events: one 50 min before the first exposure, one during the third.
    events = [NIGHT - pd.Timedelta(minutes=50), NIGHT + pd.Timedelta(seconds=75)]
    noll = rng.integers(4, 23, (len(events), 19))
    out["lsst.sal.MTAOS.logevent_wavefrontError"] = pd.concat(
        [
            pd.DataFrame({"time": events}),
            pd.DataFrame(noll, columns=[f"nollZernikeIndices{i}" for i in range(19)]),
        ],
        axis=1,
    )
    return out


def register(conn: psycopg.Connection[Any], data: dict[str, pd.DataFrame]) -> None:
    with conn.transaction():
        for topic, frame in data.items():
            fields = []
            for name in frame.columns:
                if name in ("time", "salIndex"):
                    continue
                fields.append(Field(name, "long" if frame[name].dtype.kind == "i" else "double"))
            register_topic(conn, topic, tuple(fields))


def consdb_reference(columns: list[dict[str, Any]], data: dict[str, pd.DataFrame]) -> dict[tuple, Any]:
    """ConsDB's definitions, in pandas: {(table, exposure, name, field): value}."""
    expected: dict[tuple, Any] = {}
    for column in columns:
        topic = column["topics"][0]
        series = data[topic["name"]].set_index("time")
        fields = [f["name"] for f in topic["fields"]]
        if column.get("subset_field"):
            key, wanted = column["subset_field"], column["subset_value"]
            wanted = [str(v) for v in wanted] if isinstance(wanted, list) else [str(wanted)]
            series = series[series[key].astype(str).isin(wanted)]
            fields.remove(key)
        series = series[fields].dropna()
        args = dict(column.get("function_args") or {})
        for exposure, start, seconds in EXPOSURES:
            begin = NIGHT + pd.Timedelta(seconds=start)
            end = begin + pd.Timedelta(seconds=seconds)
            ts_start = begin + pd.Timedelta(hours=column.get("start_offset", 0))
            # pre_aggregate_interval: InfluxDB's GROUP BY time(1s), bins aligned on 1970
            binned = column.get("pre_aggregate_interval") is not None
            window = series.resample("1s").mean().dropna() if binned else series
            window = window[(window.index >= ts_start) & (window.index <= end)]
            for table in column["tables"]:
                if table.endswith("_unpivoted"):
                    for field in fields:
                        value = summary(window[[field]], column["function"], args)
                        if value is not None:
                            expected[(table, exposure, column["name"], field)] = value
                else:
                    expected[(table, exposure, column["name"], None)] = summary(
                        window, column["function"], args
                    )
    return expected


def summary(frame: pd.DataFrame, function: str, args: dict[str, Any]) -> float | None:
    """ConsDB's Summary: values flattened; None when empty or all NaN; stddev None below 2 values."""
    values = frame.to_numpy(dtype=np.float64)
    if values.size == 0:
        return None
    flat = values.flatten()
    if function == "mean":
        return float(np.nanmean(flat))
    if function == "stddev":
        return float(np.nanstd(flat, ddof=args.get("ddof", 1))) if len(flat) > 1 else None
    if function in ("min", "max"):
        return float(getattr(np, f"nan{function}")(flat))
    if function == "most_recent_value":
        return float(values[-1, 0])
    degree = args.get("degree", 1)
    x = np.arange(len(frame)) if args.get("fit_basis", "index") == "index" else None
    assert x is not None
    if len(x) <= degree:
        return None
    # ConsDB fits its (n, 1) array and subtracts np.polyval's (n,) result, which numpy broadcasts to an
    # (n, n) matrix of every value minus every fitted value; its docstring's "RMS after fitting a
    # polynomial" is the residual RMS, computed here (and by DMS) on the one column.
    y = values[:, 0]
    coeffs = np.polyfit(x, y, degree)
    return float(np.sqrt(np.mean((y - np.polyval(coeffs, x)) ** 2)))


def stored(conn: psycopg.Connection[Any], columns: list[dict[str, Any]]) -> dict[tuple, Any]:
    found: dict[tuple, Any] = {}
    for table in ("exposure_efd_unpivoted", "visit1_efd_unpivoted"):
        key = "exposure_id" if table.startswith("exposure") else "visit_id"
        for row in conn.execute(f"SELECT {key}, property, field, value FROM efd_lsstcam.{table}"):
            if row[3] is not None:
                found[(table, row[0], row[1], row[2])] = row[3]
    for table in ("exposure_efd", "visit1_efd"):
        key = "exposure_id" if table == "exposure_efd" else "visit_id"
        names = [c["name"] for c in columns if table in c["tables"]]
        select = ", ".join(f'"{n}"' for n in names)
        for row in conn.execute(f"SELECT {key}, {select} FROM efd_lsstcam.{table}"):
            for name, value in zip(names, row[1:], strict=True):
                found[(table, row[0], name, None)] = value
    return found


def load(conn: psycopg.Connection[Any], data: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    for i, (topic, frame) in enumerate(data.items()):
        path = tmp_path / f"topic{i}.parquet"
        frame.to_parquet(path)
        ingest.load_file(conn, path, topic=topic)


def add_exposures(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        for exposure, start, seconds in EXPOSURES:
            begin_tai = (NIGHT + pd.Timedelta(seconds=start) + TAI_MINUS_UTC).tz_localize(None)
            add_exposure(conn, exposure, begin_tai.to_pydatetime(), seconds)


def test_consdb_lsstcam_configuration_equals_consdb_definitions(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    columns = yaml.safe_load(CONFIG.read_text())["columns"]
    data = telemetry(np.random.default_rng(20250501))
    register(efd_conn, data)
    outputs = transform.read_config(CONFIG)
    assert transform.configure(efd_conn, outputs) == sum(len(c["tables"]) for c in columns)
    add_exposures(efd_conn)
    load(efd_conn, data, tmp_path)
    assert transform.run(efd_conn)[1] == len(EXPOSURES)
    expected = consdb_reference(columns, data)
    found = stored(efd_conn, columns)
    assert set(found) == set(expected)
    for key, value in expected.items():
        if value is None:
            assert found[key] is None, key
        else:
            assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # The facts the issue names: degree 4 on the sample index; start_offset -1 h reaches the event
    # 50 min before the first exposure; the list subset reads three sensors.
    jitter = found[
        ("exposure_efd", EXPOSURES[0][0], "mt_azimuth_encoder_absolute_position_0_rms_jitter", None)
    ]
    assert 1e-5 < jitter < 1e-3
    zernike = ("exposure_efd_unpivoted", EXPOSURES[0][0], "mt_logevent_annular_zernike_indices")
    wfe = data["lsst.sal.MTAOS.logevent_wavefrontError"]
    assert found[(*zernike, "nollZernikeIndices0")] == wfe.nollZernikeIndices0.iloc[0]
    stored_config = {(o.target_table, o.name): o for o in transform.list_outputs(efd_conn)}
    rms = stored_config[("exposure_efd", "mt_azimuth_encoder_absolute_position_0_rms_jitter")]
    assert (rms.function_args, rms.ucd, rms.datatype) == (
        {"degree": 4, "fit_basis": "index"},
        "stat.rms",
        "float",
    )
    dome = stored_config[("exposure_efd", "mt_dome_temperature_mean")]
    assert (dome.subset_field, dome.fields) == ("sal_index", ["temperatureItem0"])


def test_degree_2_on_the_index_is_not_the_time_fit(efd_conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """function_args {degree: 2, fit_basis: index} fits order 2 on the sample index: on azimuth samples
    with uneven spacing it differs from a fit in time (and from order 4, DMS's old default)."""
    topic = "lsst.sal.MTMount.encoder"
    rng = np.random.default_rng(5)
    gaps = rng.choice([0.05, 0.05, 0.05, 0.35], 600).cumsum()  # dropped samples: uneven time steps
    t = NIGHT - pd.Timedelta(seconds=2) + pd.to_timedelta(gaps[gaps < 34], "s")
    s = (t - NIGHT).total_seconds().to_numpy()
    az = 181.7 + 0.0041 * s + 3e-4 * np.sin(0.9 * s) + rng.normal(0, 2e-5, len(s))
    frame = pd.DataFrame({"time": t, "azimuthEncoderAbsolutePosition0": az})
    register(efd_conn, {topic: frame})
    config = {
        "columns": [
            {
                "name": "mt_azimuth_encoder_absolute_position_0_rms_jitter",
                "tables": ["exposure_efd"],
                "function": "rms_from_polynomial_fit",
                "function_args": {"degree": 2, "fit_basis": "index"},
                "datatype": "float",
                "ivoa": {"unit": '""', "ucd": "stat.rms"},
                "description": "RMS after 2nd order polynomial fit of azimuth.",
                "packed_series": False,
                "topics": [{"name": topic, "fields": [{"name": "azimuthEncoderAbsolutePosition0"}]}],
            }
        ]
    }
    transform.configure(efd_conn, transform.parse_config(config, "cfg"))
    with efd_conn.transaction():
        add_exposure(efd_conn, EXPOSURES[0][0], (NIGHT + TAI_MINUS_UTC).tz_localize(None).to_pydatetime(), 30)
    load(efd_conn, {topic: frame}, tmp_path)
    transform.run(efd_conn)
    (value,) = efd_conn.execute(
        "SELECT mt_azimuth_encoder_absolute_position_0_rms_jitter FROM efd_lsstcam.exposure_efd"
    ).fetchone() or (None,)
    window = frame[(frame.time >= NIGHT) & (frame.time <= NIGHT + pd.Timedelta(seconds=30))]
    y = window.azimuthEncoderAbsolutePosition0.to_numpy()

    def rms(x: np.ndarray, degree: int) -> float:
        return float(np.sqrt(np.mean((y - np.polyval(np.polyfit(x, y, degree), x)) ** 2)))

    index = rms(np.arange(len(y)), 2)
    assert value == pytest.approx(index, rel=1e-9)
    seconds = (window.time - window.time.iloc[0]).dt.total_seconds().to_numpy()
    assert abs(rms(seconds, 2) - index) > 1e-3 * index  # the time fit is another number
    assert abs(rms(np.arange(len(y)), 4) - index) > 1e-3 * index  # and so is order 4


def test_the_old_dms_form_is_refused_with_the_consdb_form_named(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        "outputs:\n- {target_table: exposure_efd, name: x, topic: t, fields: [a], function: mean}\n"
    )
    with pytest.raises(transform.EFDTransformError, match="a mapping with a `columns` list"):
        transform.read_config(path)
    bad = yaml.safe_load(CONFIG.read_text())
    bad["columns"][0]["function_args"] = {"degree": 4, "order": 2}
    with pytest.raises(transform.EFDTransformError, match=r"column 1 \(mt_azimuth.*order.*not arguments"):
        transform.parse_config(bad, "cfg.yaml")
