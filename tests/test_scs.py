"""Simple Cone Search names its tables as TAP does, lists them at /scs, and reports errors as SCS 1.03
defines them, so that pyvo raises with the service's message (issue 11, item 17)."""

from __future__ import annotations

import io

import httpx
import pytest
import pyvo
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse_single_table
from pyvo.dal.exceptions import DALQueryError
from vo_meta_support import MetaVO, meta_vo_fixture  # noqa: F401 (the meta_vo fixture)


def _expected(live: MetaVO, ra: float, dec: float, radius: float) -> set[int]:
    gaia = live.gaia
    separation = (
        SkyCoord(gaia["ra"].to_numpy(), gaia["dec"].to_numpy(), unit="deg")
        .separation(SkyCoord(ra, dec, unit="deg"))
        .deg
    )
    return set(gaia["source_id"].to_numpy()[separation <= radius].tolist())


@pytest.mark.parametrize("name", ["gaia", "GAIA", "cat.gaia", "Catalog.Gaia"])
def test_the_names_tap_accepts(meta_vo: MetaVO, name: str) -> None:
    result = pyvo.dal.SCSService(f"{meta_vo.url}/scs/{name}").search(pos=(200.0, -40.0), radius=3.0)
    assert set(result.to_table()["source_id"].tolist()) == _expected(meta_vo, 200.0, -40.0, 3.0) != set()
    tap = pyvo.dal.TAPService(f"{meta_vo.url}/tap").search(
        f"SELECT COUNT(*) AS n FROM {name.split('.')[-1]} "
        "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 200.0, -40.0, 3.0)) = 1"
    )
    assert int(tap.to_table()["n"][0]) == len(result)


def test_bare_and_qualified_names_of_a_control_table(meta_vo: MetaVO) -> None:
    for name in ("obj", "SURVEY.OBJ", "survey.obj"):
        response = httpx.get(f"{meta_vo.url}/scs/{name}", params={"RA": 10, "DEC": 20, "SR": 0.2})
        assert response.status_code == 200, (name, response.text)
        assert len(parse_single_table(io.BytesIO(response.content)).array) > 0
    assert httpx.get(f"{meta_vo.url}/scs/obj/capabilities").status_code == 200


def test_the_listing(meta_vo: MetaVO) -> None:
    response = httpx.get(f"{meta_vo.url}/scs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    for name in ("cat.gaia", "survey.obj"):
        assert f'href="{meta_vo.url}/scs/{name}"' in response.text
    assert "ivoa.ObsCore" not in response.text  # SIA serves the images


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("gaia", {"RA": 400, "DEC": 0, "SR": 1}, "RA 400 is outside"),
        ("gaia", {"RA": 10, "DEC": 0, "SR": -1}, "SR -1 is negative"),
        ("gaia", {"RA": 10, "DEC": 0, "SR": 1, "VERB": 9}, "VERB '9' is not supported"),
        ("nowhere", {"RA": 10, "DEC": 0, "SR": 1}, "no cone search on 'nowhere'"),
    ],
)
def test_errors_are_scs_error_documents(
    meta_vo: MetaVO, path: str, params: dict[str, float], message: str
) -> None:
    response = httpx.get(f"{meta_vo.url}/scs/{path}", params=params)
    assert response.status_code in (400, 404)
    assert '<INFO name="Error" value=' in response.text and message in response.text
    service = pyvo.dal.SCSService(f"{meta_vo.url}/scs/{path}")
    query = service.create_query()
    for key, value in params.items():
        query[key] = value
    with pytest.raises(DALQueryError, match=message):
        query.execute()
