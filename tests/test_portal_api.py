"""The portal's JSON endpoints over real HTTP: the HEALPix density map counted in the database against healpy
on the same rows, image previews and cutouts against astropy, the APDB light curve against the stored
DiaSources, and the token check on every endpoint."""

from __future__ import annotations

import io

import astropy.units as u
import healpy as hp
import httpx
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.visualization import ZScaleInterval
from astropy.wcs import WCS
from PIL import Image
from portal_support import LIGHT_CURVE_OBJECT, LivePortal

from dms.services.portal.density import density_query

pytest_plugins = ["portal_support"]  # the live_portal fixture


def get(live: LivePortal, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{live.url}{path}", params=params, headers={"Authorization": f"Bearer {live.token}"}, timeout=120
    )


@pytest.mark.parametrize("order", [0, 3, 5])
def test_density_counts_equal_healpy_on_the_same_rows(live_portal: LivePortal, order: int) -> None:
    response = get(live_portal, "/portal/api/density", table="cat.gaia", order=str(order))
    assert response.status_code == 200, response.text
    found = response.json()
    ra, dec = live_portal.gaia["ra"].to_numpy(), live_portal.gaia["dec"].to_numpy()
    expected = np.bincount(hp.ang2pix(2**order, ra, dec, nest=True, lonlat=True), minlength=12 * 4**order)
    got = np.zeros_like(expected)
    for pixel in found["pixels"]:
        got[pixel["pixel"]] = pixel["count"]
    assert found["order"] == order and found["nside"] == 2**order
    assert np.array_equal(got, expected) and found["total"] == len(ra)


def test_density_corners_are_healpy_boundaries(live_portal: LivePortal) -> None:
    pixels = get(live_portal, "/portal/api/density", table="cat.gaia", order="2").json()["pixels"]
    for pixel in pixels[:20]:
        corners = np.array(pixel["corners"])
        inside = hp.ang2pix(4, corners[:, 0], corners[:, 1], nest=True, lonlat=True)
        centre_ra, centre_dec = hp.pix2ang(4, pixel["pixel"], nest=True, lonlat=True)
        separation = SkyCoord(corners[:, 0], corners[:, 1], unit="deg").separation(
            SkyCoord(centre_ra, centre_dec, unit="deg")
        )
        assert (separation.deg < 30).all()  # an order-2 pixel is ~29 deg across
        assert pixel["pixel"] in inside or len(set(inside)) > 1  # corners lie on the pixel's edge


def test_density_tables_and_bad_requests(live_portal: LivePortal) -> None:
    assert get(live_portal, "/portal/api/density-tables").json() == {"tables": ["cat.gaia"]}
    for params, status, words in [
        ({"table": "cat.gaia", "order": "9"}, 400, "out of range"),
        ({"table": "cat.gaia", "order": "x"}, 400, "not an integer"),
        ({"table": 'gaia"; DROP TABLE x; --'}, 404, "has no HEALPix index"),
        ({}, 400, "table is missing"),
    ]:
        response = get(live_portal, "/portal/api/density", **params)
        assert response.status_code == status and words in response.json()["error"], response.text


def test_density_query_quotes_the_table_name() -> None:
    sql = density_query('odd"schema.t', 4)
    assert '`odd"schema`' in sql and "subChunkId >> 16" in sql


def _expected_levels(data: np.ndarray) -> np.ndarray:
    low, high = ZScaleInterval().get_limits(data[np.isfinite(data)])
    return np.flipud(np.round(np.clip((data - low) / (high - low), 0, 1) * 255).astype(np.uint8))


def test_preview_is_the_zscaled_image(live_portal: LivePortal) -> None:
    did = "ivo://dms.example/image?0"
    response = get(live_portal, "/portal/api/preview", id=did)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(response.content)))
    with fits.open(live_portal.images[did]) as hdus:
        data = next(h for h in hdus if h.is_image and h.data is not None).data.astype(np.float64)
    assert picture.shape == data.shape
    assert np.abs(picture.astype(int) - _expected_levels(data).astype(int)).max() <= 1


def test_cutout_preview_is_the_astropy_cutout(live_portal: LivePortal) -> None:
    did = "ivo://dms.example/image?0"
    with fits.open(live_portal.images[did]) as hdus:
        hdu = next(h for h in hdus if h.is_image and h.data is not None)
        data, wcs = hdu.data.astype(np.float64), WCS(hdu.header)
    ra, dec = (float(v) for v in wcs.pixel_to_world_values(100, 120))
    response = get(live_portal, "/portal/api/preview", id=did, ra=str(ra), dec=str(dec), size="0.02")
    assert response.status_code == 200, response.text
    expected = Cutout2D(data, SkyCoord(ra, dec, unit="deg"), 0.02 * u.deg, wcs=wcs, mode="trim")
    picture = np.asarray(Image.open(io.BytesIO(response.content)))
    assert picture.shape == expected.data.shape and picture.shape[0] < data.shape[0]
    assert np.abs(picture.astype(int) - _expected_levels(expected.data).astype(int)).max() <= 1


def test_preview_bad_requests(live_portal: LivePortal) -> None:
    for params, status, words in [
        ({}, 400, "id is missing"),
        ({"id": "ivo://dms.example/image?nope"}, 404, "no image with ID"),
        ({"id": "ivo://dms.example/image?2"}, 404, "not available on this server"),  # a remote file
        ({"id": "ivo://dms.example/image?0", "ra": "250"}, 400, "ra, dec and size"),
        ({"id": "ivo://dms.example/image?0", "ra": "nan", "dec": "1", "size": "1"}, 400, "finite"),
        (
            {"id": "ivo://dms.example/image?0", "ra": "10", "dec": "-80", "size": "0.1"},
            422,
            "not on this image",
        ),
        ({"id": "' OR '1'='1"}, 404, "no image with ID"),
    ]:
        response = get(live_portal, "/portal/api/preview", **params)
        assert response.status_code == status and words in response.json()["error"], (params, response.text)


def test_light_curve_is_the_apdb_history(live_portal: LivePortal) -> None:
    response = get(live_portal, "/portal/api/lightcurve", diaObjectId=str(LIGHT_CURVE_OBJECT))
    assert response.status_code == 200, response.text
    curve = response.json()
    history = live_portal.history.sort_values("midpointMjdTai")
    assert [p["mjd"] for p in curve["sources"]] == history["midpointMjdTai"].tolist()
    assert [p["band"] for p in curve["sources"]] == history["band"].tolist()
    assert np.allclose([p["flux"] for p in curve["sources"]], history["psfFlux"], rtol=1e-6)
    assert np.allclose([p["flux"] for p in curve["forced"]], live_portal.forced["psfFlux"], rtol=1e-6)
    for value, status, words in [
        ("999999", 404, "no DiaObject"),
        ("abc", 400, "not an integer"),
        ("", 400, "missing"),
    ]:
        response = get(live_portal, "/portal/api/lightcurve", diaObjectId=value)
        assert response.status_code == status and words in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    ["/portal/api/whoami", "/portal/api/density?table=cat.gaia", "/portal/api/lightcurve?diaObjectId=7"],
)
def test_endpoints_need_a_valid_token(live_portal: LivePortal, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer dms_wrong"}, {"Authorization": "Basic x"}):
        response = httpx.get(f"{live_portal.url}{path}", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert "www-authenticate" in response.headers and "dms_wrong" not in response.text


def test_whoami_and_public_pages(live_portal: LivePortal) -> None:
    me = get(live_portal, "/portal/api/whoami").json()
    assert me["user"] == "alice" and "tap" in me["scopes"] and me["anonymous_access"] is False
    page = httpx.get(f"{live_portal.url}/portal/")
    assert page.status_code == 200 and "Access token" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{live_portal.url}/portal/static/editor.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for name in ("../api.py", "..%2Fapi.py", "nope.js"):
        assert httpx.get(f"{live_portal.url}/portal/static/{name}").status_code in (401, 404)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT TOP 50 source_id, ra, dec, phot_g_mean_mag FROM cat.gaia ORDER BY source_id",
        "SELECT obs_id, s_ra, s_dec, t_exptime, calib_level FROM ivoa.ObsCore ORDER BY obs_id",
    ],
)
def test_tap_fits_output_equals_the_json_result(live_portal: LivePortal, query: str) -> None:
    results = {}
    for fmt in ("json", "fits"):
        response = httpx.post(
            f"{live_portal.url}/tap/sync",
            data={"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": fmt, "MAXREC": "2"},
            headers={"Authorization": f"Bearer {live_portal.token}"},
        )
        assert response.status_code == 200, response.text
        results[fmt] = response
    assert results["fits"].headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(results["fits"].content)) as hdus:
        table = Table.read(hdus[1])
        assert hdus[1].header["OVERFLOW"] is True
    expected = results["json"].json()
    assert len(table) == len(expected["data"]) == 2
    for index, meta in enumerate(expected["metadata"]):
        values = [row[index] for row in expected["data"]]
        column = table[meta["name"]]
        got = column.tolist()
        assert got == values or np.allclose(got, values), meta["name"]
        assert (str(column.unit) if column.unit else None) == meta["unit"], meta["name"]
    assert any(meta["unit"] == "deg" for meta in expected["metadata"]) or "gaia" in query
