"""ivo_healpix_index on PostgreSQL and DuckDB: bit for bit equal to healpy's nested ang2pix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import healpy as hp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_udfs_backends import UDFBackend, open_duckdb, open_postgres

from tests.hypothesis_profiles import examples


@pytest.fixture(scope="module", params=["postgres", "duckdb"])
def backend(request: pytest.FixtureRequest, pg_server: Any) -> Iterator[UDFBackend]:
    with open_postgres(pg_server) if request.param == "postgres" else open_duckdb() as opened:
        yield opened


def healpy_nest(order: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    expected = np.empty(len(order), dtype=np.int64)
    for o in np.unique(order):
        rows = order == o
        expected[rows] = hp.ang2pix(2 ** int(o), ra[rows], dec[rows], nest=True, lonlat=True)
    return expected


def _assert_matches_healpy(backend: UDFBackend, order: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> None:
    got = np.array(backend.rows("ivo_healpix_index(o, ra, dec)", o=order, ra=ra, dec=dec), dtype=np.int64)
    expected = healpy_nest(order, ra, dec)
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, [(order[i], ra[i], dec[i], got[i], expected[i]) for i in bad[:10]]


def _hard_positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions where the algorithm switches branches or rounds: pixel and face boundaries, the
    equatorial/polar transition (|z| = 2/3), the have_sth caps (theta < 0.01), the poles, ra = 0/360."""
    ra = rng.choice([0.0, 45.0, 90.0, 180.0, 270.0, 360.0, -0.0, 359.99999999999994, 1e-12, -45.0, 720.0], n)
    ra = np.where(rng.random(n) < 0.5, ra, rng.uniform(-360, 720, n))
    z_edge = np.degrees(np.arcsin(2 / 3))
    cap_edge = 90 - np.degrees(0.01)
    dec = rng.choice(
        [90.0, -90.0, 0.0, z_edge, -z_edge, cap_edge, -cap_edge, 89.99999999, -89.99999999, 41.8, 89.4],
        n,
    )
    jitter = rng.choice([0.0, 1e-12, -1e-12, 1e-9, -1e-9, 1e-6], n)
    return ra, np.clip(dec + jitter, -90, 90)


def test_matches_healpy_on_random_and_boundary_positions(backend: UDFBackend) -> None:
    rng = np.random.default_rng(20240611)
    n = 150_000
    ra = rng.uniform(-360, 720, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    hard_ra, hard_dec = _hard_positions(rng, 50_000)
    ra, dec = np.concatenate([ra, hard_ra]), np.concatenate([dec, hard_dec])
    order = rng.integers(0, 30, len(ra)).astype(np.int32)
    _assert_matches_healpy(backend, order, ra, dec)


def test_matches_healpy_at_every_order(backend: UDFBackend) -> None:
    rng = np.random.default_rng(7)
    ra, dec = _hard_positions(rng, 2_000)
    ra = np.concatenate([ra, rng.uniform(0, 360, 3_000)])
    dec = np.concatenate([dec, np.degrees(np.arcsin(rng.uniform(-1, 1, 3_000)))])
    order = np.repeat(np.arange(30, dtype=np.int32), len(ra))
    _assert_matches_healpy(backend, order, np.tile(ra, 30), np.tile(dec, 30))


@settings(deadline=None, max_examples=examples(60))
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 29),
            # Nonzero angles below 1e-100 degrees are outside PostgreSQL's domain (float underflow).
            st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: 0.0 if abs(x) < 1e-100 else x),
            st.one_of(st.floats(-90, 90), st.sampled_from([90.0, -90.0, 41.810314895778596])).map(
                lambda x: 0.0 if abs(x) < 1e-100 else x
            ),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_matches_healpy_on_arbitrary_inputs(
    backend: UDFBackend, rows: list[tuple[int, float, float]]
) -> None:
    order, ra, dec = (np.array(c) for c in zip(*rows, strict=True))
    _assert_matches_healpy(backend, order.astype(np.int32), ra.astype(float), dec.astype(float))


def test_known_pixels(backend: UDFBackend) -> None:
    assert backend.value("ivo_healpix_index(0, 0, 90)") == 0
    assert backend.value("ivo_healpix_index(0, 0, -90)") == 8
    assert backend.value("ivo_healpix_index(29, 45.0, 20.0)") == 54059908118547663
    assert backend.value("ivo_healpix_index(29, 0, 90)") == 2**58 - 1


NULL_CASES = [
    "NULL, 0, 0",
    "5, NULL, 0",
    "5, 0, NULL",
    "5, 'NaN', 0",
    "5, 0, 'NaN'",
    "5, 'Infinity', 0",
    "5, '-Infinity', 0",
    "5, 0, 'Infinity'",
    "40, 'NaN', 0",
    "NULL, 0, 95",
]


@pytest.mark.parametrize("arguments", NULL_CASES)
def test_null_nan_and_infinity_give_null(backend: UDFBackend, arguments: str) -> None:
    order, ra, dec = arguments.split(", ")
    call = f"ivo_healpix_index({order}, CAST({ra} AS DOUBLE PRECISION), CAST({dec} AS DOUBLE PRECISION))"
    assert backend.value(call) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("-1, 0, 0", "order must be an integer from 0 to 29"),
        ("30, 0, 0", "order must be an integer from 0 to 29"),
        ("5, 0, 90.000001", "dec must be within"),
        ("5, 0, -91", "dec must be within"),
    ],
)
def test_invalid_order_or_dec_is_an_error(backend: UDFBackend, arguments: str, message: str) -> None:
    with pytest.raises(backend.error, match=message):
        backend.value(f"ivo_healpix_index({arguments})")


def test_invalid_row_fails_the_query_and_valid_rows_do_not(backend: UDFBackend) -> None:
    ra, dec = np.array([10.0, 20.0, 30.0]), np.array([0.0, 45.0, 95.0])
    assert len(backend.rows("ivo_healpix_index(12, ra, dec)", ra=ra[:2], dec=dec[:2])) == 2
    with pytest.raises(backend.error, match="dec must be within"):
        backend.rows("ivo_healpix_index(12, ra, dec)", ra=ra, dec=dec)
