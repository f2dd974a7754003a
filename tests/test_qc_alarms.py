"""QC thresholds and alarms: raised, deduplicated while the condition persists, cleared on recovery;
unit conversion checked against astropy; bad thresholds and measurements refused."""

from __future__ import annotations

from typing import Any

import astropy.units as u
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dms.loaders.qc import api
from dms.loaders.qc.api import Measurement
from dms.loaders.qc.errors import QCError, QCUnitError
from tests.efd_support import efd_conn, efd_deployment, reset
from tests.hypothesis_profiles import examples

__all__ = ["efd_conn", "efd_deployment"]


def seeing(
    value: float, unit: str | None = None, production: str = "prompt", detector: int | None = None
) -> Measurement:
    data_id = {"detector": detector} if detector is not None else None
    return Measurement(
        "ip_diffim.psf_fwhm", value, unit, scope="production", production=production, data_id=data_id
    )


def alarms(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return sorted(api.list_alarms(conn), key=lambda a: a["alarm_id"])


@pytest.fixture()
def qc(efd_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    api.add_metric(efd_conn, "ip_diffim.psf_fwhm", "arcsec", "PSF FWHM")
    api.add_threshold(efd_conn, "psf_fwhm.design", "ip_diffim.psf_fwhm", "<=", 1.2, "arcsec", "design")
    return efd_conn


def test_alarm_is_raised_deduplicated_and_cleared(qc: psycopg.Connection[Any]) -> None:
    api.insert_measurement(qc, seeing(0.9))
    assert alarms(qc) == []
    first = api.insert_measurement(qc, seeing(1.5))
    (alarm,) = alarms(qc)
    assert (alarm["state"], alarm["severity"], alarm["measurement_id"]) == ("raised", "warning", first)
    assert alarm["message"] == "ip_diffim.psf_fwhm = 1.5 arcsec, design requires <= 1.2 arcsec"
    assert alarm["data_id"] == {"production": "prompt"}
    last = api.insert_measurement(qc, seeing(1.6))  # the condition persists: the same alarm, counted
    (alarm,) = alarms(qc)
    assert (alarm["occurrences"], alarm["last_measurement_id"]) == (2, last)
    api.insert_measurement(qc, seeing(2.0, production="drp"))  # another series: its own alarm
    assert [a["state"] for a in api.list_alarms(qc, active=True)] == ["raised", "raised"]
    clearing = api.insert_measurement(qc, seeing(1.1))  # prompt recovers
    by_series = {a["series"]["production"]: a for a in alarms(qc)}
    assert by_series["prompt"]["state"] == "cleared" and by_series["prompt"]["cleared_at"] is not None
    assert by_series["drp"]["state"] == "raised"
    assert qc.execute(
        "SELECT cleared_by_measurement_id FROM dms.qc_alarm WHERE alarm_id = %s",
        (by_series["prompt"]["alarm_id"],),
    ).fetchone() == (clearing,)
    api.insert_measurement(qc, seeing(1.7))  # fails again after recovery: a new alarm
    assert [a["state"] for a in alarms(qc) if a["series"]["production"] == "prompt"] == ["cleared", "raised"]
    kinds = [r[0] for r in qc.execute("SELECT kind FROM dms.gateway_event ORDER BY event_id")]
    assert kinds.count("qc_measurement") == 6
    assert [k for k in kinds if k != "qc_measurement"] == [
        "qc_alarm_raised",
        "qc_alarm_repeated",
        "qc_alarm_raised",
        "qc_alarm_cleared",
        "qc_alarm_raised",
    ]


def test_plain_sql_inserts_are_evaluated_too(qc: psycopg.Connection[Any]) -> None:
    with qc.transaction():
        qc.execute(
            "INSERT INTO dms.qc_measurement (metric, value, unit, scope, production) "
            "VALUES ('ip_diffim.psf_fwhm', 2000, 'mas', 'production', 'prompt')"
        )
    (alarm,) = alarms(qc)
    assert alarm["state"] == "raised"


def test_applies_to_restricts_the_measurements_checked(qc: psycopg.Connection[Any]) -> None:
    api.add_threshold(
        qc,
        "psf_fwhm.det9",
        "ip_diffim.psf_fwhm",
        "<",
        0.5,
        "arcsec",
        "stretch",
        severity="critical",
        applies_to={"detector": 9},
    )
    api.insert_measurement(qc, seeing(0.8, detector=8))
    assert alarms(qc) == []
    api.insert_measurement(qc, seeing(0.8, detector=9))
    (alarm,) = alarms(qc)
    assert (alarm["threshold"], alarm["severity"]) == ("psf_fwhm.det9", "critical")


OPERATORS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}
UNITS = ["arcsec", "mas", "arcmin", "deg"]


@settings(
    max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    operator=st.sampled_from(sorted(OPERATORS)),
    threshold=st.floats(0.1, 10),
    threshold_unit=st.sampled_from(UNITS),
    # a realistic domain: PostgreSQL reports float8 underflow (an error) for subnormal results
    value=st.just(0.0) | st.floats(1e-12, 10),
    value_unit=st.sampled_from(UNITS),
)
def test_evaluation_converts_units_like_astropy(
    efd_conn: psycopg.Connection[Any],
    operator: str,
    threshold: float,
    threshold_unit: str,
    value: float,
    value_unit: str,
) -> None:
    reset(efd_conn)
    api.add_metric(efd_conn, "ip_diffim.psf_fwhm", "arcsec", "PSF FWHM")
    api.add_threshold(efd_conn, "t", "ip_diffim.psf_fwhm", operator, threshold, threshold_unit, "design")
    converted = (value * u.Unit(value_unit)).to_value(threshold_unit)
    if abs(converted - threshold) <= 1e-9 * threshold:
        return  # too close to call across float rounding of the two conversions
    api.insert_measurement(efd_conn, seeing(value, value_unit))
    fails = not OPERATORS[operator](converted, threshold)
    assert len(alarms(efd_conn)) == int(fails)


def test_bad_thresholds_and_measurements_are_clear_errors(qc: psycopg.Connection[Any]) -> None:
    with pytest.raises(QCUnitError, match="unknown unit 'furlongs'"):
        api.add_threshold(qc, "x", "ip_diffim.psf_fwhm", "<", 1, "furlongs", "design")
    with pytest.raises(QCUnitError, match=r"unit 's' \(s\) cannot be converted to 'arcsec' \(rad\)"):
        api.add_threshold(qc, "x", "ip_diffim.psf_fwhm", "<", 1, "s", "design")
    with pytest.raises(QCError, match="operator '=<' is not one of"):
        api.add_threshold(qc, "x", "ip_diffim.psf_fwhm", "=<", 1, "arcsec", "design")
    with pytest.raises(QCError, match="level 'goal' is not one of minimum, design, stretch"):
        api.add_threshold(qc, "x", "ip_diffim.psf_fwhm", "<", 1, "arcsec", "goal")
    with pytest.raises(QCError, match="unknown metric 'nope'"):
        api.add_threshold(qc, "x", "nope", "<", 1, "arcsec", "design")
    with pytest.raises(QCError, match="already exists"):
        api.add_threshold(qc, "psf_fwhm.design", "ip_diffim.psf_fwhm", "<", 1, "arcsec", "design")
    with pytest.raises(QCUnitError, match="cannot be converted"):
        api.insert_measurement(qc, seeing(1.0, "K"))
    with pytest.raises(QCError, match="scope exposure needs an instrument and an exposure"):
        api.insert_measurement(qc, Measurement("ip_diffim.psf_fwhm", 1.0, scope="exposure"))
    with (
        pytest.raises(psycopg.errors.InvalidParameterValue, match="unit 'furlong' is not registered"),
        qc.transaction(),
    ):
        qc.execute(
            "INSERT INTO dms.qc_measurement (metric, value, unit, scope, production) "
            "VALUES ('ip_diffim.psf_fwhm', 1, 'furlong', 'production', 'p')"
        )
    assert qc.execute("SELECT count(*) FROM dms.qc_measurement").fetchone() == (0,)
    assert [t["name"] for t in api.list_thresholds(qc)] == ["psf_fwhm.design"]


def test_removing_a_threshold_keeps_its_alarm_history(qc: psycopg.Connection[Any]) -> None:
    api.add_threshold(qc, "unused", "ip_diffim.psf_fwhm", "<", 5, "arcsec", "minimum")
    assert api.remove_threshold(qc, "unused") == "removed"
    api.insert_measurement(qc, seeing(3.0))
    assert api.remove_threshold(qc, "psf_fwhm.design").startswith("deactivated")
    api.insert_measurement(qc, seeing(0.1))  # an inactive threshold neither raises nor clears
    assert [a["state"] for a in alarms(qc)] == ["raised"]
    with pytest.raises(QCError, match="no threshold named 'nope'"):
        api.remove_threshold(qc, "nope")


@pytest.mark.parametrize("operator", ["<", "<=", ">", ">=", "==", "!="])
def test_nan_is_a_data_quality_alarm_whatever_the_operator(
    efd_conn: psycopg.Connection[Any], operator: str
) -> None:
    """NaN never passes: it raises the alarm (any operator), repeats an open one, never clears it."""
    api.add_metric(efd_conn, "ip_diffim.psf_fwhm", "arcsec", "PSF FWHM")
    api.add_threshold(efd_conn, "t", "ip_diffim.psf_fwhm", operator, 1.2, "arcsec", "design")
    first = api.insert_measurement(efd_conn, seeing(float("nan")))
    (alarm,) = alarms(efd_conn)
    assert (alarm["state"], alarm["measurement_id"]) == ("raised", first)
    assert "is NaN (not a number)" in alarm["message"]
    stored = efd_conn.execute(
        "SELECT value FROM dms.qc_measurement WHERE measurement_id = %s", (first,)
    ).fetchone()
    assert stored is not None and stored[0] != stored[0]  # the NaN itself is kept
    failing = {"<": 5.0, "<=": 5.0, ">": 0.1, ">=": 0.1, "==": 0.1, "!=": 1.2}[operator]
    api.insert_measurement(efd_conn, seeing(failing))  # a real failure: the same alarm, repeated
    api.insert_measurement(efd_conn, seeing(float("nan"), "mas"))  # NaN in another unit: still no pass
    (alarm,) = alarms(efd_conn)
    assert (alarm["state"], alarm["occurrences"]) == ("raised", 3)


def test_nan_does_not_clear_an_open_alarm(qc: psycopg.Connection[Any]) -> None:
    api.add_threshold(qc, "psf_fwhm.min", "ip_diffim.psf_fwhm", ">=", 0.3, "arcsec", "minimum")
    api.insert_measurement(qc, seeing(0.1))  # below the >= minimum: raised
    api.insert_measurement(qc, seeing(float("nan")))
    states = {a["threshold"]: (a["state"], a["occurrences"]) for a in alarms(qc)}
    assert states == {"psf_fwhm.min": ("raised", 2), "psf_fwhm.design": ("raised", 1)}


@pytest.mark.parametrize(
    ("operator", "value", "unit", "threshold", "threshold_unit", "alarm"),
    [
        ("<=", 9.0, "mas", 0.009, "arcsec", False),  # 9 x 0.001 = 0.009000000000000001
        ("<", 9.0, "mas", 0.009, "arcsec", True),  # at the limit: not strictly below it
        (">=", 0.009, "arcsec", 9.0, "mas", False),
        (">=", 0.3, "arcmin", 18.0, "arcsec", False),  # at the limit, from above the threshold's unit
        ("<=", 9.001, "mas", 0.009, "arcsec", True),  # a real excess is still an alarm
        ("<=", 9.0000001, "mas", 0.009, "arcsec", True),  # 1e-8 relative: above conversion rounding
    ],
)
def test_a_value_at_a_limit_given_in_another_unit_is_at_the_limit(
    efd_conn: psycopg.Connection[Any],
    operator: str,
    value: float,
    unit: str,
    threshold: float,
    threshold_unit: str,
    alarm: bool,
) -> None:
    api.add_metric(efd_conn, "ip_diffim.psf_fwhm", "arcsec", "PSF FWHM")
    api.add_threshold(efd_conn, "t", "ip_diffim.psf_fwhm", operator, threshold, threshold_unit, "design")
    api.insert_measurement(efd_conn, seeing(value, unit))
    assert len(alarms(efd_conn)) == int(alarm)
