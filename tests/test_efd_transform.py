"""The transformed EFD's stored procedures against a straightforward pandas/numpy computation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms.loaders.efd import ingest, transform
from dms.loaders.efd.errors import EFDTransformError
from dms.loaders.efd.topics import Field, register_topic
from tests.efd_support import INSTRUMENT, add_exposure, efd_conn, efd_deployment, reset
from tests.hypothesis_profiles import examples

__all__ = ["efd_conn", "efd_deployment"]

TOPIC = "lsst.sal.ESS.airTurbulence"
TAI_MINUS_UTC = dt.timedelta(seconds=37)  # since 2017-01-01
T0 = dt.datetime(2025, 4, 15, 3, 0, 0)  # TAI

# Outputs named after real efd_lsstcam columns, each exercising one function, subset and offset.
OUTPUTS = [
    {
        "target_table": "exposure_efd",
        "name": "mt_salindex110_sonic_temperature_mean",
        "function": "mean",
        "fields": ["sonicTemperature"],
        "subset_field": "sal_index",
        "subset_value": "110",
    },
    {
        "target_table": "exposure_efd",
        "name": "mt_salindex110_sonic_temperature_stddev",
        "function": "stddev",
        "fields": ["sonicTemperature"],
        "subset_field": "sal_index",
        "subset_value": "110",
    },
    {
        "target_table": "exposure_efd",
        "name": "mt_salindex110_wind_speed_0_min",
        "function": "min",
        "fields": ["speed0"],
        "subset_field": "sal_index",
        "subset_value": "110",
    },
    {
        "target_table": "exposure_efd",
        "name": "mt_salindex110_wind_speed_0_max",
        "function": "max",
        "fields": ["speed0"],
        "start_offset": -5.0 / 3600,  # ConsDB's: hours added to the start, i.e. 5 s earlier
    },
    {
        "target_table": "exposure_efd",
        "name": "mt_salindex122_temperature_6",
        "function": "most_recent_value",
        "fields": ["sonicTemperature"],
        "start_offset": -30.0 / 3600,
    },
    {
        "target_table": "exposure_efd",
        "name": "mt_azimuth_encoder_absolute_position_0_rms_jitter",
        "function": "rms_from_polynomial_fit",
        "fields": ["speed0"],
        "function_args": {"degree": 2, "fit_basis": "index"},
        "subset_field": "sal_index",  # one sensor: distinct times, so the fit is well posed
        "subset_value": "110",
    },
    {
        "target_table": "visit1_efd",
        "name": "mt_salindex110_sonic_temperature_mean",
        "function": "mean",
        "fields": ["sonicTemperature"],
    },
    {
        "target_table": "exposure_efd_unpivoted",
        "name": "wind_speed_mean",
        "function": "mean",
        "fields": ["speed0", "speed1"],
        "subset_field": "sal_index",
        "subset_value": "110",
    },
]


def pandas_transform(samples: pd.DataFrame, exposures: pd.DataFrame, output: dict[str, Any]) -> dict:
    """The reference, ConsDB's definitions: for each exposure, the samples of [begin + start_offset
    hours, end] (UTC) with every field of the output present, and the function over them."""
    result: dict[tuple[int, str], float | None] = {}
    for _, e in exposures.iterrows():
        begin = e.begin_tai - TAI_MINUS_UTC + pd.Timedelta(hours=output.get("start_offset", 0.0))
        end = e.end_tai - TAI_MINUS_UTC
        s = samples[(samples.time >= begin) & (samples.time <= end)]
        if "subset_field" in output:
            s = s[s[output["subset_field"]] == int(output["subset_value"])]
        s = s.sort_values(["time", "sal_index"]).dropna(subset=output["fields"])
        for field in output["fields"]:
            result[(e.id, field)] = reference_value(s, field, output)
    return result


def reference_value(s: pd.DataFrame, field: str, output: dict[str, Any]) -> float | None:
    values = s[field]
    function = output["function"]
    if values.empty or (function == "stddev" and len(values) < 2):
        return None
    if function == "most_recent_value":
        return float(values.iloc[-1])
    if function in ("mean", "min", "max"):
        return float(getattr(values, function)())
    if function == "stddev":
        return float(values.std(ddof=1))
    degree = output.get("function_args", {}).get("degree", 1)
    if len(values) <= degree:
        return None
    x = np.arange(len(values))  # ConsDB's default fit_basis: the sample index
    coef = np.polyfit(x, values.to_numpy(), degree)
    return float(np.sqrt(np.mean((values.to_numpy() - np.polyval(coef, x)) ** 2)))


def setup_topic(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        fields = (Field("sonicTemperature", "double"), Field("speed0", "double"), Field("speed1", "float"))
        register_topic(conn, TOPIC, fields)
    transform.configure(conn, transform.parse_outputs([{"topic": TOPIC, **o} for o in OUTPUTS], "test"))


def write_jsonl(path: Path, samples: pd.DataFrame) -> Path:
    with path.open("w") as f:
        for row in samples.itertuples():
            record = {
                "topic": TOPIC,
                "private_efdStamp": row.time.timestamp(),
                "salIndex": row.sal_index,
                "sonicTemperature": row.sonicTemperature,
                "speed0": row.speed0,
                "speed1": row.speed1,
            }
            f.write(
                json.dumps({k: v for k, v in record.items() if not (isinstance(v, float) and np.isnan(v))})
                + "\n"
            )
    return path


def database_values(conn: psycopg.Connection[Any], output: dict[str, Any]) -> dict:
    table, name = output["target_table"], output["name"]
    if table.endswith("_unpivoted"):
        key = "exposure_id" if table.startswith("exposure") else "visit_id"
        rows = conn.execute(
            f"SELECT {key}, field, value FROM efd_lsstcam.{table} WHERE property = %s", (name,)
        ).fetchall()
        return {(r[0], r[1]): r[2] for r in rows}
    key = "exposure_id" if table == "exposure_efd" else "visit_id"
    rows = conn.execute(f'SELECT {key}, "{name}" FROM efd_lsstcam.{table}').fetchall()
    return {(r[0], output["fields"][0]): r[1] for r in rows}


def assert_matches(conn: psycopg.Connection[Any], samples: pd.DataFrame, exposures: pd.DataFrame) -> None:
    for output in OUTPUTS:
        expected = pandas_transform(samples, exposures, output)
        found = database_values(conn, output)
        assert set(found) == set(expected), output["name"]
        for key, value in expected.items():
            if value is None:
                assert found[key] is None, (output["name"], key, found[key])
            else:
                # rms: the database fits by normal equations, numpy by QR (tolerance relative to the data)
                atol = 1e-7 * max(1.0, float(samples[key[1]].abs().max()))
                assert found[key] == pytest.approx(value, rel=1e-9, abs=atol), (output["name"], key)


times = st.integers(min_value=0, max_value=400)  # tenths of a second after T0 (UTC)
# Telemetry values at a sensor's resolution (1e-4): PostgreSQL reports float8 underflow instead of rounding
# to 0 (e.g. squaring 1e-200 in stddev), which values of physical telemetry never come near.
reading = st.integers(-300_000, 300_000).map(lambda v: v / 1e4)
sample = st.tuples(
    times,
    st.sampled_from([110, 111]),
    reading,
    reading.map(abs),
    st.one_of(st.none(), reading.map(abs)),
)


@settings(
    max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    samples=st.lists(sample, max_size=60, unique_by=lambda s: (s[0], s[1])),
    windows=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 150)), min_size=1, max_size=5),
)
def test_transform_equals_pandas(
    efd_conn: psycopg.Connection[Any], tmp_path: Path, samples: list, windows: list
) -> None:
    reset(efd_conn)
    setup_topic(efd_conn)
    frame = pd.DataFrame(samples, columns=["tenths", "sal_index", "sonicTemperature", "speed0", "speed1"])
    frame["time"] = pd.to_datetime(T0 - TAI_MINUS_UTC, utc=True) + pd.to_timedelta(frame.tenths * 100, "ms")
    frame["speed1"] = frame.speed1.astype(float).astype(np.float32).astype(float)  # a float (real) field
    exposures = pd.DataFrame(
        [(2025041500001 + i, T0 + dt.timedelta(seconds=b / 10), w / 10) for i, (b, w) in enumerate(windows)],
        columns=["id", "begin_tai", "seconds"],
    )
    exposures["end_tai"] = exposures.begin_tai + pd.to_timedelta(exposures.seconds, "s")
    exposures["begin_tai"] = pd.to_datetime(exposures.begin_tai).dt.tz_localize("UTC")
    exposures["end_tai"] = exposures.end_tai.dt.tz_localize("UTC")
    with efd_conn.transaction():
        for e in exposures.itertuples():
            add_exposure(efd_conn, e.id, e.begin_tai.to_pydatetime().replace(tzinfo=None), e.seconds)
    if len(frame):
        ingest.load_file(efd_conn, write_jsonl(tmp_path / "s.jsonl", frame), unordered=True)
    _, count = transform.run(efd_conn)
    assert count == len(exposures)
    assert_matches(efd_conn, frame, exposures)


def frame_of(rows: list[tuple[float, int, float, float, float]]) -> pd.DataFrame:
    """Samples at the given seconds after T0 (UTC)."""
    frame = pd.DataFrame(rows, columns=["seconds", "sal_index", "sonicTemperature", "speed0", "speed1"])
    frame["time"] = pd.to_datetime(T0 - TAI_MINUS_UTC, utc=True) + pd.to_timedelta(frame.seconds, "s")
    return frame


def exposures_of(spans: list[tuple[int, float, float]]) -> pd.DataFrame:
    """Exposures (id, begin seconds after T0 TAI, duration), registered as the test's reference frame."""
    exposures = pd.DataFrame(spans, columns=["id", "begin", "seconds"])
    exposures["begin_tai"] = pd.to_datetime(T0, utc=True) + pd.to_timedelta(exposures.begin, "s")
    exposures["end_tai"] = exposures.begin_tai + pd.to_timedelta(exposures.seconds, "s")
    return exposures


def test_late_telemetry_is_transformed_again_and_reruns_are_idempotent(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    setup_topic(efd_conn)
    rng = np.random.default_rng(7)
    on_time = frame_of([(s, 110, *rng.normal(10, 2, 3)) for s in np.arange(0, 30, 0.5)])
    late = frame_of([(s, 110, *rng.normal(10, 2, 3)) for s in np.arange(60.25, 90, 0.5)])
    exposures = exposures_of([(2025041500001, 0, 30), (2025041500002, 60, 30), (2025041500003, 200, 30)])
    with efd_conn.transaction():
        for e in exposures.itertuples():
            add_exposure(efd_conn, e.id, e.begin_tai.to_pydatetime().replace(tzinfo=None), e.seconds)
    ingest.load_file(efd_conn, write_jsonl(tmp_path / "a.jsonl", on_time))
    assert transform.run(efd_conn)[1] == 3
    assert_matches(efd_conn, on_time, exposures)
    before = database_values(efd_conn, OUTPUTS[0])
    assert transform.run(efd_conn)[1] == 0  # nothing new: nothing recomputed
    assert database_values(efd_conn, OUTPUTS[0]) == before

    ingest.load_file(efd_conn, write_jsonl(tmp_path / "b.jsonl", late))  # telemetry of exposure 2, late
    _, count = transform.run(efd_conn)
    assert count == 1  # only the exposure whose window received samples
    both = pd.concat([on_time, late], ignore_index=True)
    assert_matches(efd_conn, both, exposures)
    assert database_values(efd_conn, OUTPUTS[0])[(2025041500003, "sonicTemperature")] is None  # no telemetry

    ingest.load_file(efd_conn, write_jsonl(tmp_path / "b.jsonl", late))  # the same file again: no new rows
    assert transform.run(efd_conn)[1] == 0  # a reload that stored nothing re-transforms nothing
    transform.transform_exposures(efd_conn, INSTRUMENT, list(exposures.id))  # forced re-run: same values
    assert_matches(efd_conn, both, exposures)


def test_polynomial_rms_of_smooth_motion_plus_jitter(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A slewing axis (a large smooth trend) with micro-jitter: the residual RMS is the jitter."""
    setup_topic(efd_conn)
    rng = np.random.default_rng(3)
    seconds = np.arange(0, 30, 0.02)
    trend = 180 + 0.5 * seconds - 0.01 * seconds**2
    frame = frame_of(
        [
            (s, 110, 10.0, v, 1.0)
            for s, v in zip(seconds, trend + rng.normal(0, 1e-4, len(seconds)), strict=True)
        ]
    )
    exposures = exposures_of([(2025041500001, 0, 30)])
    with efd_conn.transaction():
        add_exposure(efd_conn, 2025041500001, T0, 30)
    ingest.load_file(efd_conn, write_jsonl(tmp_path / "a.jsonl", frame))
    transform.run(efd_conn)
    assert_matches(efd_conn, frame, exposures)
    rms = database_values(efd_conn, OUTPUTS[5])[(2025041500001, "speed0")]
    assert rms == pytest.approx(1e-4, rel=0.1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"topic": "lsst.sal.Nope.x"}, "unknown topic 'lsst.sal.Nope.x'"),
        ({"fields": ["nope"]}, "has no field 'nope'"),
        ({"name": "not_a_column"}, "exposure_efd has no column 'not_a_column'"),
        (
            {"fields": ["speed0", "speed1"], "function": "rms_from_polynomial_fit"},
            "rms_from_polynomial_fit of a pivoted column fits one field",
        ),
        ({"function": "median"}, "function: Input should be"),
        ({"subset_field": "nope", "subset_value": "1"}, "subset field 'nope'"),
        ({"function": "rms_from_polynomial_fit", "function_args": {"degree": 99}}, "degree must be"),
        ({"function": "rms_from_polynomial_fit", "function_args": {"order": 4}}, "order is not ConsDB"),
        ({"function": "rms_from_polynomial_fit", "function_args": {"fit_basis": "x"}}, "index or time"),
        ({"start_offset": float("inf")}, "start_offset"),
    ],
)
def test_bad_configuration_is_refused_and_nothing_is_stored(
    efd_conn: psycopg.Connection[Any], change: dict[str, Any], message: str
) -> None:
    setup_topic(efd_conn)
    before = transform.list_outputs(efd_conn)
    good = {
        "topic": TOPIC,
        "target_table": "exposure_efd",
        "name": "mt_salindex110_wind_speed_1_mean",
        "function": "mean",
        "fields": ["speed1"],
    }
    with pytest.raises(EFDTransformError, match=message):
        transform.configure(efd_conn, transform.parse_outputs([good, {**good, **change}], "cfg.yaml"))
    assert transform.list_outputs(efd_conn) == before  # the good output was not stored either


def consdb_column(name: str, function: str, fields: list[str], topic: str = TOPIC, **more: Any) -> dict:
    """One column of a configuration in ConsDB's format."""
    return {
        "name": name,
        "tables": more.pop("tables", ["exposure_efd"]),
        "function": function,
        "datatype": "float",
        "ivoa": {"unit": "deg_C"},
        "description": f"{function} of {', '.join(fields)}",
        "packed_series": False,
        "topics": [{"name": topic, "fields": [{"name": f} for f in fields]}],
        **more,
    }


def test_boolean_fields_are_summarised_as_consdb_does(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """MTMount's elevationInPosition.inPosition (boolean) as most_recent_value and mean: 1/0 and the
    fraction of true samples, while the other outputs of the run are computed as usual."""
    setup_topic(efd_conn)
    event = "lsst.sal.MTMount.logevent_elevationInPosition"
    with efd_conn.transaction():
        register_topic(efd_conn, event, (Field("inPosition", "boolean"),))
    config = {
        "columns": [
            consdb_column(
                "mt_elevation_in_position",
                "most_recent_value",
                ["inPosition"],
                event,
                tables=["exposure_efd_unpivoted"],
                store_unpivoted=True,
            ),
            consdb_column(
                "mt_elevation_in_position_fraction",
                "mean",
                ["inPosition"],
                event,
                tables=["exposure_efd_unpivoted"],
                store_unpivoted=True,
            ),
        ]
    }
    transform.configure(efd_conn, transform.parse_config(config, "cfg"))
    exposures = exposures_of([(2025041500001, 0, 30), (2025041500002, 40, 30)])
    with efd_conn.transaction():
        for e in exposures.itertuples():
            add_exposure(efd_conn, e.id, e.begin_tai.to_pydatetime().replace(tzinfo=None), e.seconds)
    states = [(2.0, True), (11.5, False), (12.0, True), (29.0, False), (45.0, True), (50.0, True)]
    path = tmp_path / "inpos.jsonl"
    start = pd.Timestamp(T0 - TAI_MINUS_UTC, tz="UTC")
    path.write_text(
        "".join(
            json.dumps(
                {
                    "topic": event,
                    "private_efdStamp": (start + pd.Timedelta(seconds=t)).timestamp(),
                    "inPosition": v,
                }
            )
            + "\n"
            for t, v in states
        )
    )
    ingest.load_file(efd_conn, path)
    frame = frame_of([(s, 110, 10.0 + s, 1.0, 1.0) for s in np.arange(0, 80, 1.0)])
    ingest.load_file(efd_conn, write_jsonl(tmp_path / "a.jsonl", frame))
    assert transform.run(efd_conn)[1] == 2
    assert_matches(efd_conn, frame, exposures)  # the numeric outputs of the same run
    got = {
        (r[0], r[1]): r[2]
        for r in efd_conn.execute(
            "SELECT exposure_id, property, value FROM efd_lsstcam.exposure_efd_unpivoted "
            "WHERE field = 'inPosition'"
        )
    }
    for e in exposures.itertuples():
        begin, end = e.begin, e.begin + e.seconds
        inside = [float(v) for t, v in states if begin <= t <= end]
        assert got[(e.id, "mt_elevation_in_position")] == inside[-1]
        assert got[(e.id, "mt_elevation_in_position_fraction")] == pytest.approx(np.mean(inside))


def test_new_outputs_are_computed_for_exposures_already_transformed(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    setup_topic(efd_conn)
    rng = np.random.default_rng(11)
    frame = frame_of([(s, 110, *rng.normal(10, 2, 3)) for s in np.arange(0, 100, 0.5)])
    exposures = exposures_of([(2025041500001, 0, 30), (2025041500002, 40, 30), (2025041500003, 75, 20)])
    with efd_conn.transaction():
        for e in exposures.itertuples():
            add_exposure(efd_conn, e.id, e.begin_tai.to_pydatetime().replace(tzinfo=None), e.seconds)
    ingest.load_file(efd_conn, write_jsonl(tmp_path / "a.jsonl", frame))
    assert transform.run(efd_conn)[1] == 3
    assert transform.run(efd_conn)[1] == 0

    added = {
        "target_table": "exposure_efd",
        "name": "mt_salindex110_wind_speed_1_mean",
        "function": "mean",
        "fields": ["speed1"],
        "subset_field": "sal_index",
        "subset_value": "110",
    }
    new = consdb_column(
        added["name"], "mean", ["speed1", "salIndex"], subset_field="salIndex", subset_value=110
    )
    transform.configure(efd_conn, transform.parse_config({"columns": [new]}, "cfg"))
    assert transform.run(efd_conn)[1] == 3  # the new output, for every exposure transformed before
    expected = pandas_transform(frame, exposures, added)
    assert database_values(efd_conn, added) == pytest.approx(expected)
    assert transform.run(efd_conn)[1] == 0  # computed: no longer pending
    transform.configure(efd_conn, transform.parse_config({"columns": [new]}, "cfg"))
    assert transform.run(efd_conn)[1] == 0  # the same definition again changes nothing

    changed = {**added, "function": "max"}
    new["function"] = "max"
    transform.configure(efd_conn, transform.parse_config({"columns": [new]}, "cfg"))
    assert transform.run(efd_conn)[1] == 3  # a changed definition is computed again
    assert database_values(efd_conn, changed) == pytest.approx(pandas_transform(frame, exposures, changed))

    efd_conn.execute(
        'UPDATE efd_lsstcam.exposure_efd SET "mt_salindex110_wind_speed_1_mean" = NULL'
    )  # e.g. outputs damaged or computed by an older DMS
    assert transform.run(efd_conn, recompute=True)[1] == 3  # the option recomputes everything
    assert database_values(efd_conn, changed) == pytest.approx(pandas_transform(frame, exposures, changed))
