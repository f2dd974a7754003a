"""A live server for the portal tests and benchmark: a deployment with anonymous access off, user alice and
her token (`dms users`), a Gaia sample loaded with `dms load` as cat.gaia, ObsCore rows of which two
are real FITS images that astropy ships (M13, an image with a SIP WCS), and DiaObject histories in the APDB.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from apdb_support import field_positions, make_forced, make_objects, make_sources, tai
from click.testing import CliRunner
from vo_support import publish_test_data

from dms import migrate
from dms.cli import main
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.loaders.samples import gaia_table, write_parquet
from dms.services.apdb import Apdb
from dms.services.vo.server import running_server
from tests.pg_support import control_database, drop_database, seed_default_shard

ASTROPY = Path(astropy.__file__).parent
REAL_IMAGES = {
    "ivo://dms.example/image?0": ("m13", ASTROPY / "io/fits/hdu/compressed/tests/data/m13.fits"),
    "ivo://dms.example/image?1": ("sipwcs", ASTROPY / "nddata/tests/data/sip-wcs.fits"),
}
LIGHT_CURVE_OBJECT = 7
VISITS = 6


@dataclass
class LivePortal:
    url: str
    deployment: Deployment
    token: str
    gaia: pa.Table
    images: dict[str, Path]  # publisher DID -> the FITS file on the server
    history: pd.DataFrame  # the DiaSources of LIGHT_CURVE_OBJECT
    forced: pd.DataFrame


def dms(deployment: Deployment, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(deployment.data_dir), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _images(deployment: Deployment) -> dict[str, Path]:
    from astropy.io import fits
    from astropy.wcs import WCS

    store = deployment.data_dir / "backbone" / "main"
    store.mkdir(parents=True)
    placed = {}
    with deployment.engine().begin() as conn:
        for did, (obs_id, source) in REAL_IMAGES.items():
            path = store / source.name
            shutil.copyfile(source, path)
            with fits.open(path) as hdus:
                hdu = next(h for h in hdus if h.is_image and h.data is not None)
                ny, nx = hdu.data.shape
                ra, dec = WCS(hdu.header).pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2)
            conn.execute(
                sa.text(
                    'UPDATE ivoa."ObsCore" SET access_url = :u, obs_id = :o, s_ra = :ra, s_dec = :dec, '
                    "s_fov = 0.2 WHERE obs_publisher_did = :d"
                ),
                {"u": path.resolve().as_uri(), "o": obs_id, "ra": float(ra), "dec": float(dec), "d": did},
            )
            placed[did] = path
    return placed


def _apdb(deployment: Deployment) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    ids = np.arange(1, 21)
    positions = field_positions(rng, len(ids), 10.0, 20.0, 0.5)
    sources, forced = [], []
    with Apdb.from_deployment(deployment) as apdb:
        for visit in range(VISITS):
            mjd = 60_700.25 + 3.0 * visit
            objects = make_objects(rng, ids, positions, mjd)
            seen = make_sources(rng, objects, visit + 1, 10, mjd, first_id=1 + visit * len(ids))
            measured = make_forced(objects, visit + 1, 10, mjd, first_id=1 + visit * len(ids))
            apdb.store(tai(mjd), objects, seen, measured)
            sources.append(seen[seen["diaObjectId"] == LIGHT_CURVE_OBJECT])
            forced.append(measured[measured["diaObjectId"] == LIGHT_CURVE_OBJECT])
    return pd.concat(sources, ignore_index=True), pd.concat(forced, ignore_index=True)


@pytest.fixture(scope="module", name="live_portal")
def live_portal_fixture(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePortal]:
    name = control_database(pg_server, "po")
    directory = tmp_path_factory.mktemp("portal")
    deployment = Deployment.create(directory / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    served: Deployment | None = None
    gaia = gaia_table().take(pa.array(np.arange(0, 482_176, 20)))
    try:
        migrate.upgrade(deployment)
        publish_test_data(deployment)
        images = _images(deployment)
        history, forced = _apdb(deployment)
        load_files(
            deployment,
            "gaia",
            [write_parquet(gaia, directory / "gaia.parquet")],
            progress=False,
            create=TableOptions(ra="ra", dec="dec", id="source_id", chunk_order=2),
        )
        dms(deployment, "users", "add", "alice")
        token = dms(deployment, "users", "token", "alice").splitlines()[0].strip()
        dms(deployment, "users", "anonymous", "deny")
        served = Deployment.open(deployment.data_dir)
        with running_server(served) as url:
            yield LivePortal(url, served, token, gaia, images, history, forced)
    finally:
        if served is not None:
            served.dispose()
        deployment.dispose()
        drop_database(pg_server, name)
