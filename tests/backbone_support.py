"""Shared fixtures of the Data Backbone and archiver tests: one migrated deployment per test module (an
external deployment on the session's real PostgreSQL), emptied before each test; real FITS files that
astropy ships; and LSSTCam-style multi-extension raws (one HDU per amplifier) written with astropy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import astropy
import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.time import Time

from dms import migrate
from dms.deployment import Deployment
from dms.services.backbone import Backbone
from tests.pg_support import control_database, drop_database, seed_default_shard

ASTROPY = Path(astropy.__file__).parent
REAL_FILES = {
    "wfpc2": ASTROPY / "io/fits/tests/data/test0.fits",  # WFPC2, 4 chips, DATE-OBS dd/mm/yy, EXPSTART
    "wfpc2_next_day": ASTROPY / "io/fits/tests/data/test1.fits",  # same ROOTNAME, one day later
    "acs": ASTROPY / "wcs/tests/data/j94f05bgq_flt.fits",  # ACS, SIP WCS, FILTER1 F606W
    "stis": ASTROPY / "io/fits/tests/data/o4sp040b0_raw.fits",  # STIS raw, RA_TARG/DEC_TARG
    "apogee": ASTROPY / "nddata/tests/data/sip-wcs.fits",  # Apogee Alta, MJD-OBS, filter B, SIP WCS
    "chandra": ASTROPY / "io/fits/tests/data/chandra_time.fits",  # ACIS events, keys in extension 1
    "dss_gz": ASTROPY / "wcs/tests/data/dss.14.29.56-62.41.05.fits.gz",  # gzip, DSS plate, old DATE-OBS
    "no_keys": ASTROPY / "io/fits/hdu/compressed/tests/data/m13.fits",  # WCS but no INSTRUME/DATE-OBS
}

RESET = """
TRUNCATE dms.distribution_item, dms.distribution_subscription, dms.replication_task, dms.replication_policy,
  dms.exposure_log, dms.datastore_record, dms.tagged_dataset, dms.dataset, dms.collection_chain,
  dms.collection, dms.dataset_type, cdb_lsstcam.ccdexposure, cdb_lsstcam.exposure, cdb_lsstcomcam.ccdexposure,
  cdb_lsstcomcam.exposure, cdb_lsstcomcamsim.ccdexposure, cdb_lsstcomcamsim.exposure, cdb_latiss.ccdexposure,
  cdb_latiss.exposure, ivoa."ObsCore",
  dms.exposure, dms.detector, dms.day_obs, dms.physical_filter, dms.instrument, dms.site CASCADE
"""


@pytest.fixture(scope="module")
def module_deployment(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = control_database(pg_server, "bb")
    url = pg_server.get_uri(name)  # type: ignore[attr-defined]
    dep = Deployment.create(tmp_path_factory.mktemp("bbdep"), database_url=url)
    seed_default_shard(dep, pg_server)
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


@pytest.fixture()
def deployment(module_deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """The module's deployment, emptied: no datasets, no files, default sites only."""
    monkeypatch.setenv("DMS_DATABASE_URL", str(module_deployment.config.database_url))
    with module_deployment.engine().begin() as conn:
        conn.execute(sa.text(RESET))
    shutil.rmtree(module_deployment.data_dir / "backbone", ignore_errors=True)
    return module_deployment


@pytest.fixture()
def backbone(deployment: Deployment) -> Backbone:
    return Backbone(deployment)


def lsstcam_raw(
    path: Path,
    *,
    day_obs: int = 20250415,
    seq_num: int = 123,
    raft: str = "R22",
    slot: str = "S11",
    ra: float = 150.0,
    dec: float = 2.2,
    physical_filter: str = "r_57",
    amplifiers: int = 16,
    amp_shape: tuple[int, int] = (50, 40),
    fill: int = 1000,
    drop: tuple[str, ...] = (),
) -> Path:
    """An LSSTCam-style raw: primary header with the camera's keywords, one image HDU per amplifier,
    each with a TAN WCS placing the amplifiers side by side (0.2 arcsec pixels)."""
    begin = Time(f"{str(day_obs)[:4]}-{str(day_obs)[4:6]}-{str(day_obs)[6:]}T23:00:00", scale="tai")
    begin = begin + seq_num * 40 * u.s
    end = begin + 30 * u.s
    primary = fits.PrimaryHDU()
    cards = {
        "INSTRUME": "LSSTCam",
        "TELESCOP": "Rubin:Simonyi",
        "TIMESYS": "TAI",
        "OBSID": f"MC_O_{day_obs}_{seq_num:06d}",
        "DAYOBS": day_obs,
        "SEQNUM": seq_num,
        "CONTRLLR": "O",
        "DATE-BEG": begin.isot,
        "DATE-END": end.isot,
        "MJD-BEG": begin.mjd,
        "MJD-END": end.mjd,
        "EXPTIME": 30.0,
        "DARKTIME": 30.8,
        "FILTER": physical_filter,
        "FILTBAND": physical_filter[0],
        "RA": ra,
        "DEC": dec,
        "ROTPA": 12.5,
        "AZSTART": 140.0,
        "ELSTART": 65.0,
        "IMGTYPE": "OBJECT",
        "REASON": "science",
        "PROGRAM": "BLOCK-365",
        "OBJECT": "field_7",
        "GROUPID": f"{day_obs}T{seq_num}",
        "RAFTBAY": raft,
        "CCDSLOT": slot,
    }
    for key, value in cards.items():
        if key not in drop:
            primary.header[key] = value
    hdus = [primary]
    ny, nx = amp_shape
    scale = 0.2 / 3600.0
    for amp in range(amplifiers):
        data = np.full(amp_shape, fill + amp, dtype=np.int32)
        hdu = fits.ImageHDU(data, name=f"Segment{amp // 8}{amp % 8}")
        column, row = amp % 8, amp // 8
        hdu.header.update(
            {
                "CTYPE1": "RA---TAN",
                "CTYPE2": "DEC--TAN",
                "CUNIT1": "deg",
                "CUNIT2": "deg",
                "CRVAL1": ra,
                "CRVAL2": dec,
                "CD1_1": -scale,
                "CD1_2": 0.0,
                "CD2_1": 0.0,
                "CD2_2": scale,
                "CRPIX1": (4 - column) * nx + 0.5,
                "CRPIX2": (1 - row) * ny + 0.5,
            }
        )
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
