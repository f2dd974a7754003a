"""The coordinate-system argument (any string, ADQL 2.1): known frames transformed to ICRS with astropy,
unknown ones taken as ICRS with a warning, and what was done reported as notes (issue 17)."""

from __future__ import annotations

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord
from click.testing import CliRunner
from sqlglot import exp

from dms import cli
from dms.query.adql import AdqlError, parse
from dms.query.adql.frames import collect_notes, frame_name, infos


def constants(sql_tree: exp.Expression, function: str) -> list[float]:
    """The numeric arguments of the first call of `function` in the translated query."""
    call = next(n for n in sql_tree.find_all(exp.Anonymous) if n.name == function)
    values = []
    for arg in call.expressions:
        if isinstance(arg, exp.Neg):
            values.append(-float(arg.this.this))
        elif isinstance(arg, exp.Literal) and not arg.is_string:
            values.append(float(arg.this))
    return values


@pytest.mark.parametrize(
    ("frame", "astropy_frame", "equinox"),
    [
        ("GALACTIC", "galactic", None),
        ("FK5", "fk5", "J2000"),
        ("J2000", "fk5", "J2000"),
        ("FK4", "fk4", "B1950"),
        ("B1950", "fk4", "B1950"),
        ("ECLIPTIC", "barycentricmeanecliptic", "J2000"),
        ("galactic", "galactic", None),
    ],
)
def test_constant_circle_centre_is_transformed_to_icrs(
    frame: str, astropy_frame: str, equinox: str | None
) -> None:
    with collect_notes() as notes:
        tree = parse(
            f"SELECT a FROM t WHERE CONTAINS(POINT(ra, dec), CIRCLE('{frame}', 120.5, -33.25, 0.5)) = 1"
        )
    ra, dec, radius = constants(tree, "scisql_s2PtInCircle")
    options = {"equinox": equinox} if equinox else {}
    expected = SkyCoord(120.5 * u.deg, -33.25 * u.deg, frame=astropy_frame, **options).icrs
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(expected).arcsec < 1e-6
    assert radius == 0.5
    [note] = notes
    assert not note.warning and note.info_name == "COORDSYS"
    assert f"in '{frame}' transformed to ICRS" in note.text


def test_polygon_vertices_and_point_are_transformed() -> None:
    with collect_notes() as notes:
        tree = parse(
            "SELECT DISTANCE(POINT('GALACTIC', 10, 20), POINT(ra, dec)) AS d FROM t "
            "WHERE CONTAINS(POINT(ra, dec), POLYGON('FK5', 10, 20, 11, 20, 11, 21)) = 1"
        )
    sep = constants(tree, "scisql_angSep")
    expected = SkyCoord(10 * u.deg, 20 * u.deg, frame="galactic").icrs
    assert SkyCoord(sep[0] * u.deg, sep[1] * u.deg).separation(expected).arcsec < 1e-6
    poly = constants(tree, "scisql_s2PtInCPoly")
    vertices = SkyCoord([10, 11, 11] * u.deg, [20, 20, 21] * u.deg, frame="fk5", equinox="J2000").icrs
    found = SkyCoord(poly[0::2] * u.deg, poly[1::2] * u.deg)
    assert max(found.separation(vertices).arcsec) < 1e-6
    assert len(notes) == 2


def test_icrs_and_empty_frames_are_left_alone() -> None:
    for frame in ("ICRS", "ICRS GEOCENTER", "icrs barycenter", ""):
        with collect_notes() as notes:
            tree = parse(f"SELECT a FROM t WHERE CONTAINS(POINT(ra, dec), CIRCLE('{frame}', 1, 2, 3)) = 1")
        assert constants(tree, "scisql_s2PtInCircle") == [1, 2, 3]
        assert notes == []


def test_unknown_frame_is_taken_as_icrs_with_a_warning() -> None:
    with collect_notes() as notes:
        tree = parse("SELECT a FROM t WHERE CONTAINS(POINT(ra, dec), CIRCLE('MARS_FIXED', 1, 2, 3)) = 1")
    assert constants(tree, "scisql_s2PtInCircle") == [1, 2, 3]
    [note] = notes
    assert note.warning and "'MARS_FIXED' is not known" in note.text
    assert infos(notes) == {"WARNING": note.text}


def test_known_frame_on_columns_is_taken_as_icrs_with_a_warning() -> None:
    with collect_notes() as notes:
        tree = parse("SELECT a FROM t WHERE CONTAINS(POINT('GALACTIC', l, b), CIRCLE('ICRS', 1, 2, 3)) = 1")
    call = next(n for n in tree.find_all(exp.Anonymous) if n.name == "scisql_s2PtInCircle")
    assert [a.sql() for a in call.expressions[:2]] == ["l", "b"]
    [note] = notes
    assert note.warning and "only constant coordinates are transformed" in note.text


def test_notes_outside_a_collector_are_dropped_and_frame_names_are_normalised() -> None:
    parse("SELECT a FROM t WHERE CONTAINS(POINT(ra, dec), CIRCLE('GALACTIC', 1, 2, 3)) = 1")
    assert frame_name("  icrs   geocenter ") == "ICRS"
    assert frame_name("") == ""


def test_region_stcs_frame_is_transformed() -> None:
    tree = parse("SELECT a FROM t WHERE CONTAINS(POINT(ra, dec), REGION('CIRCLE GALACTIC 0 0 1')) = 1")
    ra, dec, _ = constants(tree, "scisql_s2PtInCircle")
    centre = SkyCoord(0 * u.deg, 0 * u.deg, frame="galactic").icrs
    assert SkyCoord(ra * u.deg, dec * u.deg).separation(centre).arcsec < 1e-6


def test_in_unit_on_a_column_without_unit_is_a_clear_error() -> None:
    with pytest.raises(AdqlError, match="the unit of mag is not known"):
        parse("SELECT IN_UNIT(mag, 'deg') FROM t", unit_of=lambda c: None)
    result = CliRunner().invoke(cli.main, ["adql", "translate", "SELECT IN_UNIT(mag, 'deg') FROM t"])
    assert result.exit_code == 1
    assert "IN_UNIT: the unit of mag is not known" in result.output


def test_cli_translate_prints_the_frame_note() -> None:
    query = "SELECT a FROM t WHERE 1 = CONTAINS(POINT(ra, dec), CIRCLE('FK4', 1, 2, 3))"
    result = CliRunner().invoke(cli.main, ["adql", "translate", query])
    assert result.exit_code == 0, result.output
    assert "note: CIRCLE: 1 position(s) in 'FK4' transformed to ICRS" in result.output
