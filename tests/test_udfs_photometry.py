"""scisql photometry functions on PostgreSQL and DuckDB, checked against scisql's formulas in numpy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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


C1 = 2.5 / np.log(10)  # scisql SCISQL_5_OVER_2LOG10
C2 = np.log(10) / 2.5  # scisql SCISQL_2LOG10_OVER_5
F0 = 10 ** (-48.6 / 2.5)  # scisql SCISQL_AB_FLUX_SCALE


def _flux(mag: float, zero_point: float) -> float | None:
    exponent = -0.4 * (mag - zero_point)
    return 10.0**exponent if -307 <= exponent <= 308 else None


def _mag(flux: float, zero_point: float) -> float | None:
    return -2.5 * np.log10(flux) + zero_point if flux > 0 else None


def _needs(ok: bool, value: Callable[[], float | None]) -> float | None:
    return value() if ok else None


# name -> (reference in numpy, straight from scisql's photometry.h, argument kinds)
# Argument kinds: "flux" any sign, "mag", "sigma" (negative -> NULL), "zp" (fluxMag0, <= 0 -> NULL).
REFERENCE: dict[str, tuple[Callable[..., float | None], tuple[str, ...]]] = {
    "scisql_nanojanskyToAbMag": (lambda f: _mag(f, 31.4), ("flux",)),
    "scisql_nanojanskyToAbMagSigma": (lambda f, s: _needs(f > 0, lambda: C1 * s / f), ("flux", "sigma")),
    "scisql_abMagToNanojansky": (lambda m: _flux(m, 31.4), ("mag",)),
    "scisql_abMagToNanojanskySigma": (
        lambda m, s: _needs(_flux(m, 31.4) is not None, lambda: s * _flux(m, 31.4) * C2),
        ("mag", "sigma"),
    ),
    "scisql_fluxToAbMag": (lambda f: _mag(f, -48.6), ("flux",)),
    "scisql_fluxToAbMagSigma": (lambda f, s: _needs(f > 0, lambda: C1 * s / f), ("flux", "sigma")),
    "scisql_abMagToFlux": (lambda m: _flux(m, -48.6), ("mag",)),
    "scisql_abMagToFluxSigma": (
        lambda m, s: _needs(_flux(m, -48.6) is not None, lambda: s * _flux(m, -48.6) * C2),
        ("mag", "sigma"),
    ),
    "scisql_dnToFlux": (lambda dn, z: F0 * dn / z, ("flux", "zp")),
    "scisql_dnToFluxSigma": (
        lambda dn, s, z, zs: F0 * np.hypot(dn * zs, s * z) / (z * z),
        ("flux", "sigma", "zp", "sigma"),
    ),
    "scisql_dnToAbMag": (
        lambda dn, z: _needs(dn > 0, lambda: -2.5 * np.log10(F0 * dn / z) - 48.6),
        ("flux", "zp"),
    ),
    "scisql_dnToAbMagSigma": (
        lambda dn, s, z, zs: _needs(
            dn > 0, lambda: C1 * (F0 * np.hypot(dn * zs, s * z) / (z * z)) / (F0 * dn / z)
        ),
        ("flux", "sigma", "zp", "sigma"),
    ),
    "scisql_fluxToDn": (lambda f, z: f * z / F0, ("flux", "zp")),
    "scisql_fluxToDnSigma": (
        lambda f, s, z, zs: np.hypot(f * zs, z * s) / F0,
        ("flux", "sigma", "zp", "sigma"),
    ),
    "scisql_abMagToDn": (
        lambda m, z: _needs(_flux(m, -48.6) is not None, lambda: _flux(m, -48.6) * z / F0),
        ("mag", "zp"),
    ),
    "scisql_abMagToDnSigma": (
        lambda m, s, z, zs: _needs(
            _flux(m, -48.6) is not None,
            lambda: np.hypot(_flux(m, -48.6) * zs, z * (s * _flux(m, -48.6) * C2)) / F0,
        ),
        ("mag", "sigma", "zp", "sigma"),
    ),
}

# Values a catalog can hold, including sentinels, signs and zeros, kept clear of 1e+-300 where double
# arithmetic itself overflows or underflows (a documented limit of the functions).
_scaled = st.floats(1e-30, 1e30)
STRATEGY = {
    "flux": st.one_of(_scaled, _scaled.map(lambda x: -x), st.sampled_from([0.0, -0.0, 3631e9, 1.0, -9999.0])),
    "mag": st.one_of(st.floats(-100, 100), st.sampled_from([31.4, -48.6, 99.0, -9999.0, 9999.0])),
    "sigma": st.one_of(st.floats(1e-30, 1e6), st.sampled_from([0.0, -1.0, -9999.0])),
    "zp": st.one_of(st.floats(1e-3, 1e15), st.sampled_from([0.0, -1.0, 1e12])),
}


@pytest.mark.parametrize("function", sorted(REFERENCE))
def test_photometry_matches_scisql_formulas(backend: UDFBackend, function: str) -> None:
    reference, kinds = REFERENCE[function]
    # A magnitude near 0 is the difference of two ~48.6 terms, so it is only absolutely accurate.
    abs_tolerance = 1e-12 if function.endswith("AbMag") else 0.0
    rows = st.lists(st.tuples(*(STRATEGY[k] for k in kinds)), min_size=1, max_size=60)

    @settings(deadline=None, max_examples=examples(25))
    @given(rows=rows)
    def check(rows: list[tuple[float, ...]]) -> None:
        columns = {f"a{i}": np.array(c, dtype=float) for i, c in enumerate(zip(*rows, strict=True))}
        got = backend.rows(f"{function}({', '.join(columns)})", **columns)
        for args, value in zip(rows, got, strict=True):
            invalid_sigma = any(k == "sigma" and a < 0 for k, a in zip(kinds, args, strict=True))
            invalid_zp = any(k == "zp" and a <= 0 for k, a in zip(kinds, args, strict=True))
            expected = None if invalid_sigma or invalid_zp else reference(*args)
            if expected is None:
                assert value is None, (args, value)
            else:
                assert value == pytest.approx(expected, rel=1e-13, abs=abs_tolerance), args

    check()


@pytest.mark.parametrize("function", sorted(REFERENCE))
@pytest.mark.parametrize("special", ["NULL", "'NaN'", "'Infinity'", "'-Infinity'"])
def test_null_nan_or_infinite_argument_gives_null(backend: UDFBackend, function: str, special: str) -> None:
    _, kinds = REFERENCE[function]
    valid = {"flux": "1000.0", "mag": "20.0", "sigma": "0.1", "zp": "1e12"}
    args = [valid[k] for k in kinds]
    assert backend.value(f"{function}({', '.join(args)})") is not None
    for i in range(len(args)):
        call = ", ".join([*args[:i], f"CAST({special} AS DOUBLE PRECISION)", *args[i + 1 :]])
        assert backend.value(f"{function}({call})") is None, (function, i)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("scisql_nanojanskyToAbMag(1)", 31.4),
        ("scisql_abMagToNanojansky(31.4)", 1.0),
        ("scisql_abMagToFlux(-48.6)", 1.0),
        ("scisql_fluxToAbMag(1)", -48.6),
        ("scisql_nanojanskyToAbMag(0)", None),
        ("scisql_nanojanskyToAbMag(-5)", None),
        ("scisql_nanojanskyToAbMagSigma(0, 1)", None),
        ("scisql_nanojanskyToAbMagSigma(-5, 1)", None),
        ("scisql_nanojanskyToAbMagSigma(5, -1)", None),
        ("scisql_abMagToNanojansky(-9999)", None),
        ("scisql_abMagToNanojansky(9999)", None),
        ("scisql_dnToAbMag(0, 1e12)", None),
        ("scisql_dnToFlux(5, 0)", None),
    ],
)
def test_photometry_known_values(backend: UDFBackend, expression: str, expected: float | None) -> None:
    value = backend.value(expression)
    assert value == (None if expected is None else pytest.approx(expected, rel=1e-15, abs=1e-15))


def test_magnitudes_round_trip(backend: UDFBackend) -> None:
    mag = np.linspace(-10, 40, 101)
    got = backend.rows("scisql_nanojanskyToAbMag(scisql_abMagToNanojansky(m))", m=mag)
    np.testing.assert_allclose(np.array(got, dtype=float), mag, rtol=0, atol=1e-12)
