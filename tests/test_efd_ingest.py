"""`dms efd load`: formats, partitions, idempotence, retention, and bad input refused with nothing stored."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from dms.loaders.efd import ingest, topics
from dms.loaders.efd.errors import EFDInputError, EFDTopicError
from dms.loaders.efd.topics import Field, register_topic
from tests.efd_support import efd_conn, efd_deployment

__all__ = ["efd_conn", "efd_deployment"]

TOPIC = "lsst.sal.MTMount.azimuth"
FIELDS = (
    Field("actualPosition", "double"),
    Field("demandPosition", "double"),
    Field("inPosition", "boolean"),
    Field("mode", "string"),
    Field("count", "long"),
)


def samples(n: int, start: str = "2025-04-15T23:59:50") -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame(
        {
            "time": pd.date_range(start, periods=n, freq="250ms", tz="UTC"),
            "actualPosition": rng.uniform(0, 360, n),
            "demandPosition": rng.uniform(0, 360, n),
            "inPosition": rng.integers(0, 2, n).astype(bool),
            "mode": rng.choice(["track", "slew", 'it\'s "x"'], n),
            "count": rng.integers(-(2**40), 2**40, n),
        }
    )


def stored(conn: psycopg.Connection[Any]) -> pd.DataFrame:
    rows = conn.execute(
        'SELECT sample_time, "actualPosition", "demandPosition", "inPosition", mode, count '
        "FROM efd.lsst_sal_mtmount_azimuth ORDER BY sample_time"
    ).fetchall()
    return pd.DataFrame(
        rows, columns=["time", "actualPosition", "demandPosition", "inPosition", "mode", "count"]
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame = frame.assign(topic=TOPIC)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".csv":
        frame.assign(time=frame.time.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(path, index=False)
    elif path.suffix == ".lp":
        with path.open("w") as f:
            for r in frame.itertuples():
                fields = (
                    f"actualPosition={r.actualPosition!r},demandPosition={r.demandPosition!r},"
                    f"inPosition={'t' if r.inPosition else 'f'},mode={json.dumps(r.mode)},count={r.count}i"
                )
                f.write(f"{TOPIC} {fields} {r.time.value}\n")
    else:
        with path.open("w") as f:
            for r in frame.to_dict("records"):
                f.write(json.dumps({**r, "time": r["time"].isoformat()}) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".lp"])
def test_every_format_round_trips_into_daily_partitions(
    efd_conn: psycopg.Connection[Any], tmp_path: Path, suffix: str
) -> None:
    with efd_conn.transaction():
        register_topic(efd_conn, TOPIC, FIELDS)
    frame = samples(200)  # crosses midnight UTC: two partitions
    (result,) = ingest.load_file(efd_conn, write(frame, tmp_path / f"s{suffix}"))
    assert (result.rows, result.inserted) == (200, 200)
    pd.testing.assert_frame_equal(stored(efd_conn), frame, check_dtype=False)
    partitions = efd_conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'efd.lsst_sal_mtmount_azimuth'::regclass ORDER BY 1"
    ).fetchall()
    assert [p[0] for p in partitions] == [
        "lsst_sal_mtmount_azimuth_20250415",
        "lsst_sal_mtmount_azimuth_20250416",
    ]
    again = ingest.load_file(efd_conn, tmp_path / f"s{suffix}")
    assert again[0].inserted == 0 and len(stored(efd_conn)) == 200  # loading twice is harmless


def test_unknown_topic_needs_create(efd_conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    path = write(samples(10), tmp_path / "s.parquet")
    with pytest.raises(EFDInputError, match=r"unknown topic 'lsst.sal.MTMount.azimuth'.*--create"):
        ingest.load_file(efd_conn, path)
    assert efd_conn.execute("SELECT count(*) FROM dms.efd_topic").fetchone() == (0,)
    (result,) = ingest.load_file(efd_conn, path, create=True)
    assert result.created and result.inserted == 10
    topic = topics.get_topic(efd_conn, TOPIC)
    assert topic is not None and [(f.name, f.type) for f in topic.fields] == [
        ("actualPosition", "double"),
        ("demandPosition", "double"),
        ("inPosition", "boolean"),
        ("mode", "string"),
        ("count", "long"),
    ]


def bad_line(tmp_path: Path, **change: Any) -> Path:
    """A JSON lines file of three good samples and one changed by `change`."""
    lines = [
        {"topic": TOPIC, "time": f"2025-04-15T03:00:0{i}Z", "actualPosition": 1.0, "count": 3}
        for i in range(4)
    ]
    lines[2].update(change)
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actualPosition": "abc"}, "changed from number to string"),  # type changes within the file
        ({"count": 2.5}, r"field 'count' is long .* double values"),
        ({"nope": 1.0}, r"unknown field\(s\) nope"),
        ({"time": "2999-01-01T00:00:00Z"}, "row 4 .* in the future"),
        ({"time": "2025-04-15T02:00:00Z"}, "row 4 .* is earlier than the sample before it"),
        ({"time": "2025-04-15T03:00:01Z"}, "row 4 .* repeats the sample before it"),
        ({"time": "yesterday"}, "not ISO 8601"),
        ({"salIndex": -1}, "sal_index must not be negative"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_left(
    efd_conn: psycopg.Connection[Any], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with efd_conn.transaction():
        register_topic(efd_conn, TOPIC, FIELDS)
        register_topic(efd_conn, "lsst.sal.ATDome.position", (Field("azimuth", "double"),))
    good = tmp_path / "good.jsonl"  # a topic that is fine, loaded in the same file before the bad one
    good.write_text(
        json.dumps({"topic": "lsst.sal.ATDome.position", "time": "2025-04-15T03:00:00Z", "azimuth": 1}) + "\n"
    )
    path = bad_line(tmp_path, **change)
    path.write_text(good.read_text() + path.read_text())
    with pytest.raises(EFDInputError, match=message):
        ingest.load_file(efd_conn, path)
    assert efd_conn.execute("SELECT count(*) FROM efd.lsst_sal_atdome_position").fetchone() == (0,)
    assert efd_conn.execute("SELECT count(*) FROM dms.efd_ingest_batch").fetchone() == (0,)


def test_malformed_files_are_clear_errors(tmp_path: Path, efd_conn: psycopg.Connection[Any]) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"topic": "a.b", "time": 1}\n{"topic": \n')
    with pytest.raises(EFDInputError, match=r"broken.jsonl is not valid jsonl"):
        ingest.load_file(efd_conn, broken)
    with pytest.raises(EFDInputError, match="cannot tell the format"):
        ingest.load_file(efd_conn, tmp_path / "x.xlsx")
    line = tmp_path / "x.lp"
    line.write_text("lsst.sal.X.y value=1.0\n")
    with pytest.raises(EFDInputError, match="line 1: expected"):
        ingest.load_file(efd_conn, line)


def test_invalid_topics_are_refused(efd_conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EFDTopicError, match="valid types"):
        register_topic(efd_conn, TOPIC, (Field("x", "decimal"),))
    with pytest.raises(EFDTopicError, match="reserved"):
        register_topic(efd_conn, TOPIC, (Field("sample_time", "double"),))
    assert topics.table_name_for("lsst.sal." + "X" * 80 + ".y") != topics.table_name_for(
        "lsst.sal." + "X" * 81 + ".y"
    )
    assert len(topics.table_name_for("lsst.sal." + "X" * 80 + ".y")) <= 54


def test_retention_drops_only_whole_days_older_than_the_topic_keeps(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    with efd_conn.transaction():
        register_topic(efd_conn, TOPIC, FIELDS, retention_days=30)
        register_topic(efd_conn, "lsst.sal.ATDome.position", (Field("azimuth", "double"),))  # kept forever
    now = dt.datetime.now(dt.UTC)
    for days_ago in (40, 31, 29, 0):
        start = (now - dt.timedelta(days=days_ago)).replace(hour=0, minute=0, second=1, microsecond=0)
        frame = samples(4, start.strftime("%Y-%m-%dT%H:%M:%S"))
        ingest.load_file(efd_conn, write(frame, tmp_path / f"s{days_ago}.parquet"))
        ingest.load_file(
            efd_conn,
            write(
                frame.assign(topic="lsst.sal.ATDome.position")[["time", "topic"]].assign(azimuth=1.0),
                tmp_path / f"d{days_ago}.parquet",
            ),
            topic="lsst.sal.ATDome.position",
        )
    dropped = topics.apply_retention(efd_conn)
    efd_conn.commit()
    expected = {f"lsst_sal_mtmount_azimuth_{(now - dt.timedelta(days=d)):%Y%m%d}" for d in (40, 31)}
    assert {p for _, p in dropped} == expected
    remaining = stored(efd_conn).time.dt.date
    assert sorted(set(remaining)) == sorted({(now - dt.timedelta(days=d)).date() for d in (29, 0)})
    assert efd_conn.execute("SELECT count(*) FROM efd.lsst_sal_atdome_position").fetchone() == (16,)


# MTMount.azimuth as SAL defines it: `timestamp` is one of its fields (TAI seconds), not the EFD's time.
SAL_TOPIC = "lsst.sal.MTMount.azimuth"
SAL_FIELDS = (
    Field("actualPosition", "double", "deg"),
    Field("actualVelocity", "double", "deg/s"),
    Field("timestamp", "double", "s", "Time at which the data was measured (TAI, unix seconds)"),
)
TAI_MINUS_UTC = 37.0  # seconds, since 2017-01-01 (IERS Bulletin C)


def stored_sal(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        'SELECT sample_time, "actualPosition", "timestamp", private_snd_stamp, private_seq_num '
        "FROM efd.lsst_sal_mtmount_azimuth ORDER BY sample_time"
    ).fetchall()


def test_an_efd_select_star_export_loads(efd_conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    """`time` (ISO 8601 with nanoseconds, as InfluxDB writes it) plus every private_* column and SAL's
    TAI `timestamp`: the time is `time`, `timestamp` stays a field, the export-only stamps are dropped."""
    with efd_conn.transaction():
        register_topic(efd_conn, SAL_TOPIC, SAL_FIELDS)
    utc = pd.Timestamp("2025-04-16T02:13:07.123456789Z")
    rows = []
    for i in range(4):
        t = utc + pd.Timedelta(milliseconds=50 * i)
        snd = t.value / 1e9 + TAI_MINUS_UTC - 0.004
        rows.append(
            {
                "time": t.isoformat().replace("+00:00", "Z"),
                "actualPosition": 181.25 + i * 0.001,
                "actualVelocity": 0.02,
                "private_efdStamp": t.value / 1e9,
                "private_identity": "MTMount",
                "private_kafkaStamp": snd + 0.01,
                "private_origin": 17,
                "private_rcvStamp": snd + 0.002,
                "private_revCode": "a2b4c9e1",
                "private_seqNum": 1000 + i,
                "private_sndStamp": snd,
                "timestamp": snd - 0.01,
            }
        )
    path = tmp_path / "export.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    (result,) = ingest.load_file(efd_conn, path, topic=SAL_TOPIC)
    assert result.inserted == 4
    got = stored_sal(efd_conn)
    for row, (sample_time, position, timestamp, snd, seq) in zip(rows, got, strict=True):
        expected = pd.Timestamp(row["time"]).round("us").to_pydatetime()
        assert sample_time == expected  # nanoseconds rounded to the stored microsecond
        assert (position, timestamp, snd, seq) == (
            row["actualPosition"],
            row["timestamp"],
            row["private_sndStamp"],
            row["private_seqNum"],
        )


def test_a_file_timed_only_by_sal_timestamp_is_converted_from_tai(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    with efd_conn.transaction():
        register_topic(efd_conn, SAL_TOPIC, SAL_FIELDS)
    utc = dt.datetime(2025, 4, 16, 2, 13, 7, 250000, tzinfo=dt.UTC)
    tai = [utc.timestamp() + TAI_MINUS_UTC + 0.05 * i for i in range(3)]
    path = tmp_path / "tai.jsonl"
    path.write_text("".join(json.dumps({"timestamp": t, "actualPosition": 90.0}) + "\n" for t in tai))
    ingest.load_file(efd_conn, path, topic=SAL_TOPIC)
    got = stored_sal(efd_conn)
    assert [r[0] for r in got] == [utc + dt.timedelta(seconds=0.05 * i) for i in range(3)]  # 37 s earlier
    assert [r[2] for r in got] == tai  # and the field itself kept as SAL wrote it


def test_iso_times_without_zone_are_utc_and_nanoseconds_are_accepted(
    efd_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    with efd_conn.transaction():
        register_topic(efd_conn, SAL_TOPIC, SAL_FIELDS)
    path = tmp_path / "naive.jsonl"
    times = ["2025-04-16T02:13:07.000000001", "2025-04-16T02:13:07.999999"]
    path.write_text("".join(json.dumps({"time": t, "actualPosition": 1.0}) + "\n" for t in times))
    ingest.load_file(efd_conn, path, topic=SAL_TOPIC)
    assert [r[0] for r in stored_sal(efd_conn)] == [
        pd.Timestamp(t, tz="UTC").round("us").to_pydatetime() for t in times
    ]
