"""The STC-S reader: every region form ObsCore and ADQL use, frame words, and errors at their position."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dms.query import regions
from dms.query.adql import stcs
from dms.query.adql.errors import AdqlUnsupportedError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Position ICRS 10 20", stcs.Position(10, 20, "ICRS")),
        ("CIRCLE 10 -20.5 0.5", stcs.Circle(10, -20.5, 0.5)),
        ("Box fillfactor 1.0 FK5 GEOCENTER SPHERICAL2 10 20 2 1", stcs.Box(10, 20, 2, 1, "FK5")),
        ("polygon icrs 1 2 3 4 5 6", stcs.Polygon(((1, 2), (3, 4), (5, 6)), "ICRS")),
        (
            "Union ICRS (Circle 10 20 1 Polygon 12 20 13 20 13 21)",
            stcs.Union(
                (stcs.Circle(10, 20, 1, "ICRS"), stcs.Polygon(((12, 20), (13, 20), (13, 21)), "ICRS"))
            ),
        ),
        (
            "Intersection (Circle 1 2 3 Not (Box GALACTIC 1 2 1 1))",
            stcs.Intersection((stcs.Circle(1, 2, 3), stcs.Not(stcs.Box(1, 2, 1, 1, "GALACTIC")))),
        ),
    ],
)
def test_regions_are_read(text: str, expected: stcs.Region) -> None:
    assert stcs.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "position", "problem"),
    [
        ("CIRCLE ICRS 1 2 x", 17, "expected a number, got 'x'"),
        ("CIRCLE ICRS 1 2", 13, "CIRCLE takes 3 numbers, got 2"),
        ("POLYGON 1 2 3 4 5", 9, "at least 3 vertices"),
        ("POLYGON 1 2 3 4 5 96", 9, "latitude is outside [-90, 90]"),
        ("CIRCLE 1 2 200", 8, "radius 200 is outside [0, 180]"),
        ("Union (Circle 1 2 3", 20, "the text ends too early"),
        ("Union Circle 1 2 3", 7, "expected '(' after Union"),
        ("Not (Circle 1 2 3 Circle 4 5 6)", 1, "NOT takes one region, got 2"),
        ("Union (Circle 1 2 3)", 1, "UNION takes at least two regions"),
        ("Circle 1 2 3 )", 14, "unexpected ')' after the region"),
        ("Square 1 2 3", 1, "'Square' is not an STC-S region"),
        ("Circle CARTESIAN3 1 2 3", 8, "flavor CARTESIAN3 is not a sky position"),
        ("Circle 1 nan 3", 10, "'nan' is not a finite number"),
        ("", 1, "the region is empty"),
    ],
)
def test_malformed_text_is_refused_at_its_position(text: str, position: int, problem: str) -> None:
    with pytest.raises(stcs.StcsError) as info:
        stcs.parse(text)
    assert f"character {position}: " in info.value.message and problem in info.value.message


def test_shapes_stcs_does_not_support_here_are_named() -> None:
    with pytest.raises(AdqlUnsupportedError, match="'ELLIPSE' is not supported"):
        stcs.parse("Ellipse ICRS 1 2 3 4 5")


coordinate = st.floats(0, 359.9, allow_nan=False).map(lambda v: round(v, 6))
latitude = st.floats(-89.9, 89.9, allow_nan=False).map(lambda v: round(v, 6))


@given(st.lists(st.tuples(coordinate, latitude), min_size=3, max_size=30))
def test_polygons_read_back_as_their_vertices(vertices: list[tuple[float, float]]) -> None:
    text = "POLYGON ICRS " + " ".join(f"{lon!r} {lat!r}" for lon, lat in vertices)
    region = stcs.parse(text)
    assert region == stcs.Polygon(tuple(vertices), "ICRS")
    assert regions.shape_array(region) == [c for v in vertices for c in v]


def test_frames_are_transformed_to_icrs_by_astropy() -> None:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    shape = regions.shape_array(stcs.parse("CIRCLE GALACTIC 0 0 1"))
    assert shape is not None
    icrs = SkyCoord(0 * u.deg, 0 * u.deg, frame="galactic").icrs
    assert shape == pytest.approx([icrs.ra.deg, icrs.dec.deg, 1.0])
    assert regions.shape_array(stcs.parse("BOX ICRS 10 20 2 1")) == [9, 19.5, 11, 19.5, 11, 20.5, 9, 20.5]
    assert regions.shape_array(stcs.parse("Union (Circle 1 2 3 Circle 4 5 6)")) is None
