"""PostgreSQL's binary COPY built column-wise (dms.shards.postgres.transfer.copy_binary) into a real table:
what PostgreSQL stores equals the Arrow input, for every fixed-width type a catalog column can have."""

from __future__ import annotations

import datetime as dt

import numpy as np
import psycopg
import pyarrow as pa

from dms.shards.postgres.transfer import copy_binary


def test_binary_copy_stores_the_rows_exactly(pg_conn: psycopg.Connection) -> None:
    rng = np.random.default_rng(11)
    n = 5000
    micros = rng.integers(-(10**15), 10**15, n)
    days = rng.integers(-20000, 40000, n)
    rows = pa.table(
        {
            "b": pa.array(rng.random(n) < 0.5),
            "i8": pa.array(rng.integers(-128, 128, n), pa.int8()),
            "i16": pa.array(rng.integers(-(2**15), 2**15, n), pa.int16()),
            "i32": pa.array(rng.integers(-(2**31), 2**31, n), pa.int32()),
            "i64": pa.array(rng.integers(-(2**62), 2**62, n), pa.int64()),
            "f32": pa.array(rng.normal(0, 1e5, n).astype(np.float32)),
            "f64": pa.array(np.r_[rng.normal(0, 1e300, n - 3), [np.nan, np.inf, -0.0]]),
            "ts": pa.array(micros, pa.timestamp("us")),
            "tstz": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "d": pa.array(days.astype(np.int32), pa.date32()),
        }
    )
    pg_conn.execute(
        "CREATE TABLE t (b boolean, i8 smallint, i16 smallint, i32 integer, i64 bigint, "
        "f32 double precision, f64 double precision, ts timestamp, tstz timestamptz, d date)"
    )
    data = copy_binary(rows)
    assert data is not None
    with pg_conn.cursor() as cur, cur.copy("COPY t FROM STDIN (FORMAT binary)") as copy:
        copy.write(data)
    pg_conn.execute("SET TIME ZONE 'UTC'")
    stored = pg_conn.execute(
        "SELECT b, i8, i16, i32, i64, f32, f64, extract(epoch FROM ts)::numeric * 1000000, "
        "extract(epoch FROM tstz)::numeric * 1000000, d - DATE '1970-01-01' FROM t"
    ).fetchall()
    assert len(stored) == n
    columns = list(zip(*stored, strict=True))
    for name, got in zip(["b", "i8", "i16", "i32", "i64"], columns[:5], strict=True):
        assert list(got) == rows[name].to_pylist()
    assert np.array_equal(np.array(columns[5]), rows["f32"].to_numpy().astype(np.float64))
    assert np.array_equal(np.array(columns[6]), rows["f64"].to_numpy(), equal_nan=True)
    assert [int(v) for v in columns[7]] == micros.tolist() == [int(v) for v in columns[8]]
    assert list(columns[9]) == days.tolist()
    assert dt.date(1970, 1, 1) + dt.timedelta(days=int(days[0])) == rows["d"][0].as_py()


def test_nulls_and_text_fall_back_to_csv() -> None:
    assert copy_binary(pa.table({"x": pa.array([1, None], pa.int64())})) is None
    assert copy_binary(pa.table({"s": ["a", "b"]})) is None
    assert copy_binary(pa.table({"x": pa.array([1, 2], pa.int64())})) is not None
