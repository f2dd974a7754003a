"""PostgreSQL and DuckDB return identical results for every UDF on the same inputs.

The per-function suites (test_udfs_geometry, test_udfs_photometry, test_udfs_healpix) check each
backend against astropy, numpy and healpy; this one checks the two backends against each other, bit
for bit, on random inputs mixed with NULL, NaN, +/-Inf, zeros, negative and out-of-range values.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_udfs_backends import ARITY, DuckDBUDFs, PostgresUDFs, open_duckdb, open_postgres, values_equal

SPECIALS = [None, float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 90.0, -90.0, 91.0, 360.0, 1e12]
ROWS = 3_000


@pytest.fixture(scope="module")
def both(pg_server: Any) -> Iterator[tuple[PostgresUDFs, DuckDBUDFs]]:
    with open_postgres(pg_server) as postgres, open_duckdb() as duck:
        yield postgres, duck


def _column(rng: np.random.Generator, low: float, high: float) -> list[float | None]:
    values: list[float | None] = rng.uniform(low, high, ROWS).tolist()
    for i in rng.choice(ROWS, ROWS // 10, replace=False):
        values[i] = SPECIALS[rng.integers(len(SPECIALS))]
    return values


# Argument ranges that exercise each function's interesting region; specials are mixed in on top.
RANGES: dict[str, list[tuple[float, float]]] = {
    "scisql_angSep": [(-360, 720), (-90, 90)] * 2,
    "scisql_s2PtInCircle": [(0, 30), (-20, 20), (0, 30), (-20, 20), (0, 20)],
    "scisql_s2PtInBox": [(-20, 380), (-30, 30), (-20, 380), (-30, 10), (-20, 380), (-10, 30)],
    "scisql_s2PtInEllipse": [(9.9, 10.1), (19.9, 20.1), (10, 10), (20, 20), (0, 720), (0, 720), (0, 180)],
}
PHOTOMETRY_RANGES: dict[str, tuple[float, float]] = {"Sigma": (-1, 10), "mag": (-5, 40), "flux": (-1e4, 1e6)}


def _ranges(function: str) -> list[tuple[float, float]]:
    if function in RANGES:
        return RANGES[function]
    first = PHOTOMETRY_RANGES["mag" if function.startswith("scisql_abMag") else "flux"]
    rest: list[tuple[float, float]] = (
        [PHOTOMETRY_RANGES["Sigma"], (1e10, 1e13), (0, 1e9)] if ARITY[function] == 4 else [(1e-3, 1e13)]
    )
    if function.endswith("Sigma") and ARITY[function] == 2:
        rest = [PHOTOMETRY_RANGES["Sigma"]]
    return [first, *rest][: ARITY[function]]


@pytest.mark.parametrize("function", sorted(f for f in ARITY if f != "ivo_healpix_index"))
def test_backends_agree_bit_for_bit(both: tuple[PostgresUDFs, DuckDBUDFs], function: str) -> None:
    rng = np.random.default_rng(zlib.crc32(function.encode()))
    columns = {f"a{i}": _column(rng, low, high) for i, (low, high) in enumerate(_ranges(function))}
    call = f"{function}({', '.join(columns)})"
    postgres, duck = both
    from_postgres, from_duckdb = postgres.rows(call, **columns), duck.rows(call, **columns)
    differ = [
        i for i, (a, b) in enumerate(zip(from_postgres, from_duckdb, strict=True)) if not values_equal(a, b)
    ]
    assert not differ, [
        (tuple(c[i] for c in columns.values()), from_postgres[i], from_duckdb[i]) for i in differ[:5]
    ]
    assert sum(v is not None for v in from_postgres) > ROWS // 3  # mostly valid inputs: not vacuous
    if function.startswith("scisql_s2PtIn"):
        assert {0, 1} <= set(from_postgres)


def test_backends_agree_on_polygons(both: tuple[PostgresUDFs, DuckDBUDFs]) -> None:
    rng = np.random.default_rng(3)
    columns = {"ra": _column(rng, -5, 25), "dec": _column(rng, -5, 25)}
    corners = [(0, 0), (20, 0), (20, 20), (0, 20)]
    for i, (a, d) in enumerate(corners):
        columns[f"r{i}"] = (a + rng.uniform(-3, 3, ROWS)).tolist()
        columns[f"d{i}"] = (d + rng.uniform(-3, 3, ROWS)).tolist()
    call = "scisql_s2PtInCPoly(ra, dec, r0, d0, r1, d1, r2, d2, r3, d3)"
    postgres, duck = both
    from_postgres, from_duckdb = postgres.rows(call, **columns), duck.rows(call, **columns)
    assert from_postgres == from_duckdb
    assert {0, 1, None} <= set(from_postgres)


def test_backends_agree_on_healpix(both: tuple[PostgresUDFs, DuckDBUDFs]) -> None:
    rng = np.random.default_rng(4)
    ra = _column(rng, -360, 720)
    dec: list[float | None] = np.degrees(np.arcsin(rng.uniform(-1, 1, ROWS))).tolist()
    for i in rng.choice(ROWS, 100, replace=False):
        dec[i] = [None, float("nan"), float("inf"), 90.0, -90.0][rng.integers(5)]
    order = rng.integers(0, 30, ROWS).astype(np.int32)
    postgres, duck = both
    columns: dict[str, Any] = {"o": order, "ra": ra, "dec": dec}
    from_postgres = postgres.rows("ivo_healpix_index(o, ra, dec)", **columns)
    assert from_postgres == duck.rows("ivo_healpix_index(o, ra, dec)", **columns)
    assert sum(v is not None for v in from_postgres) > ROWS * 0.8
