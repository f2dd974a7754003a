"""TAP with the strict ADQL 2.1 grammar and frames (issue 17): invalid ADQL is an ERROR VOTable (400) naming
line and column; a constant shape in another frame is transformed, and the result's INFO says so."""

from __future__ import annotations

import io

import httpx
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io.votable import parse
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)


def sync(vo: LiveVO, query: str) -> httpx.Response:
    return httpx.get(f"{vo.url}/tap/sync", params={"LANG": "ADQL", "QUERY": query}, timeout=60)


def infos(response: httpx.Response) -> dict[str, str]:
    """The INFO elements of the results RESOURCE, read with astropy."""
    votable = parse(io.BytesIO(response.content))
    return {info.name: info.value for info in votable.resources[0].infos}


def test_invalid_adql_is_an_error_votable_with_line_and_column(live_vo: LiveVO) -> None:
    cases = {
        "SELECT id\nFROM survey.obj WHERE id IN (1, 2,)": "line 2, column 35: unexpected ')'",
        "SELECT id FROM survey.obj WHERE distance > 1": "line 1, column 33: distance is an ADQL function",
        "SELECT id FROM survey.obj ORDER BY id OFFSET -1": "line 1, column 46: unexpected '-'",
        "SELECT id FROM survey.obj LIMIT 3": "ADQL has no LIMIT",
    }
    for query, message in cases.items():
        response = sync(live_vo, query)
        assert response.status_code == 400, response.text
        assert '<INFO name="QUERY_STATUS" value="ERROR">' in response.text
        assert message in response.text, response.text


def test_galactic_cone_is_transformed_and_reported(live_vo: LiveVO) -> None:
    centre = SkyCoord(10, 20, unit="deg").galactic
    query = (
        "SELECT id FROM survey.obj WHERE CONTAINS(POINT(ra, dec), "
        f"CIRCLE('GALACTIC', {float(centre.l.deg)!r}, {float(centre.b.deg)!r}, 0.5)) = 1"
    )
    response = sync(live_vo, query)
    assert response.status_code == 200, response.text
    table = parse(io.BytesIO(response.content)).get_first_table().to_table()
    separation = SkyCoord(live_vo.ra, live_vo.dec, unit="deg").separation(centre).deg
    assert set(table["id"].tolist()) == set((np.flatnonzero(separation <= 0.5) + 1).tolist())
    assert len(table) > 10
    found = infos(response)
    assert found["QUERY_STATUS"] == "OK"
    assert "CIRCLE: 1 position(s) in 'GALACTIC' transformed to ICRS with astropy" in found["COORDSYS"]
    assert "WARNING" not in found


def test_unknown_frame_is_a_warning_info(live_vo: LiveVO) -> None:
    response = sync(
        live_vo,
        "SELECT COUNT(*) AS n FROM survey.obj "
        "WHERE CONTAINS(POINT(ra, dec), CIRCLE('ROVER', 10, 20, 0.5)) = 1",
    )
    assert response.status_code == 200, response.text
    assert "coordinate system 'ROVER' is not known" in infos(response)["WARNING"]


def test_select_star_fields_carry_their_own_columns_metadata(live_vo: LiveVO) -> None:
    """`SELECT *` lists columns in the database's order, TAP_SCHEMA in its own: each FIELD must still get
    the UCD and unit of the column of its name (taplint's MDQ section)."""
    declared = httpx.get(
        f"{live_vo.url}/tap/sync",
        params={
            "LANG": "ADQL",
            "QUERY": "SELECT column_name, ucd, unit FROM TAP_SCHEMA.columns "
            "WHERE table_name = 'ivoa.ObsCore'",
        },
        timeout=60,
    )
    rows = parse(io.BytesIO(declared.content)).get_first_table().to_table()
    expected = {str(r["column_name"]): (str(r["ucd"] or ""), str(r["unit"] or "")) for r in rows}
    response = sync(live_vo, "SELECT TOP 1 * FROM ivoa.ObsCore")
    fields = parse(io.BytesIO(response.content)).get_first_table().fields
    assert len(fields) > 20
    for field in fields:
        ucd, unit = expected[field.name]
        assert (field.ucd or "", str(field.unit or "")) == (ucd, unit), field.name
