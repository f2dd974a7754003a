"""ObsCore never truncates silently (issue 17): a long STC-S polygon and a long physical filter name are
stored, published and returned whole (migration c0018 made both TEXT)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import sqlalchemy as sa
from astropy.io.votable import parse
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)


def focal_plane_outline(ra: float, dec: float) -> str:
    """The STC-S of an LSSTCam-like focal plane outline: a 3.5 degree square with its corner rafts cut away
    (12 corners, each edge densified with its midpoint: 24 vertices), at the full precision a WCS gives."""
    half, step = 1.75, 0.7
    a, b = half, half - step  # the square's half side, and the inner corner of a cut raft
    corners = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b)]
    corners += [(b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    rng = np.random.default_rng(17)
    vertices = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for x, y in ((x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2)):
            dx, dy = rng.normal(0, 1e-6, 2)
            vertices.append((ra + x / np.cos(np.radians(dec)) + dx, dec + y + dy))
    return "POLYGON ICRS " + " ".join(f"{lon!r} {lat!r}" for lon, lat in vertices)


def test_long_s_region_and_filter_are_stored_and_returned_whole(live_vo: LiveVO) -> None:
    region = focal_plane_outline(150.1, 2.2)
    band_filter = "SDSSr_65mm~empty_long_name"
    assert len(region) > 512 and len(band_filter) > 10
    with live_vo.deployment.engine().begin() as conn:
        conn.execute(
            sa.text(
                'INSERT INTO ivoa."ObsCore" (dataproduct_type, calib_level, obs_collection, obs_id, '
                "obs_publisher_did, s_ra, s_dec, s_region, lsst_filter) VALUES ('image', 2, 'wide', 'wide1', "
                "'ivo://dms.example/image?wide1', 150.1, 2.2, :region, :filter)"
            ),
            {"region": region, "filter": band_filter},
        )
    try:
        response = httpx.get(
            f"{live_vo.url}/tap/sync",
            params={
                "LANG": "ADQL",
                "QUERY": "SELECT s_region, lsst_filter FROM ivoa.ObsCore WHERE obs_id = 'wide1'",
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        table = parse(io.BytesIO(response.content)).get_first_table().to_table()
        assert table["s_region"][0] == region and table["lsst_filter"][0] == band_filter
        published = httpx.get(
            f"{live_vo.url}/tap/sync",
            params={
                "LANG": "ADQL",
                "QUERY": "SELECT column_name, arraysize FROM TAP_SCHEMA.columns WHERE table_name = "
                "'ivoa.ObsCore' AND column_name IN ('s_region', 'lsst_filter')",
                "FORMAT": "csv",
            },
            timeout=60,
        )
        assert sorted(published.text.strip().splitlines()[1:]) == ["lsst_filter,*", "s_region,*"]
    finally:
        with live_vo.deployment.engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM ivoa.\"ObsCore\" WHERE obs_id = 'wide1'"))
