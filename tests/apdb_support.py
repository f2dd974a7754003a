"""Shared fixtures of the APDB tests: one migrated deployment per module on the session's real PostgreSQL, the
APDB emptied before each test, and realistic visits (a 1.75-degree LSST field, DiaObjects with per-band means,
DiaSources and forced sources with the values prompt processing writes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest
from astropy.time import Time

from dms import migrate
from dms.deployment import Deployment
from dms.services.apdb import Apdb
from tests.pg_support import control_database, drop_database, seed_default_shard

APDB_TABLES = ("DiaObject", "DiaObjectLast", "DiaSource", "DiaForcedSource")
FIELD_RADIUS = 1.75  # degrees: LSSTCam's field of view is 9.6 square degrees


@pytest.fixture(scope="module")
def apdb_deployment(pg_server: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    name = control_database(pg_server, "apdb")
    dep = Deployment.create(tmp_path_factory.mktemp("apdbdep"), database_url=pg_server.get_uri(name))  # type: ignore[attr-defined]
    seed_default_shard(dep, pg_server)
    migrate.upgrade(dep)
    yield dep
    dep.dispose()
    drop_database(pg_server, name)


@pytest.fixture()
def apdb(apdb_deployment: Deployment) -> Iterator[Apdb]:
    url = apdb_deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(f'apdb."{t}"' for t in APDB_TABLES) + " CASCADE")
    with Apdb.from_deployment(apdb_deployment) as db:
        yield db


def conninfo(apdb_deployment: Deployment) -> str:
    return apdb_deployment.control_url().set(drivername="postgresql").render_as_string(hide_password=False)


def field_positions(rng: np.random.Generator, n: int, ra0: float, dec0: float, radius: float) -> np.ndarray:
    """`n` positions uniform on the sphere within `radius` degrees of (ra0, dec0)."""
    cos_r = np.cos(np.radians(radius))
    z = rng.uniform(cos_r, 1.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - z**2)
    local = np.stack([z, s * np.cos(phi), s * np.sin(phi)], axis=1)  # around the +x axis
    ra_r, dec_r = np.radians(ra0), np.radians(dec0)
    rot_dec = np.array([[np.cos(dec_r), 0, -np.sin(dec_r)], [0, 1, 0], [np.sin(dec_r), 0, np.cos(dec_r)]])
    rot_ra = np.array([[np.cos(ra_r), -np.sin(ra_r), 0], [np.sin(ra_r), np.cos(ra_r), 0], [0, 0, 1]])
    xyz = local @ rot_dec.T @ rot_ra.T
    ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))
    return np.stack([ra, dec], axis=1)


def make_objects(
    rng: np.random.Generator, ids: np.ndarray, positions: np.ndarray, mjd: float
) -> pd.DataFrame:
    n = len(ids)
    frame = pd.DataFrame(
        {
            "diaObjectId": ids.astype(np.int64),
            "ra": positions[:, 0],
            "dec": positions[:, 1],
            "raErr": rng.uniform(1e-5, 5e-5, n).astype(np.float32),
            "decErr": rng.uniform(1e-5, 5e-5, n).astype(np.float32),
            "ra_dec_Cov": rng.normal(0, 1e-11, n).astype(np.float32),
            "nDiaSources": rng.integers(1, 30, n).astype(np.int32),
            "firstDiaSourceMjdTai": mjd - rng.uniform(0, 300, n),
            "lastDiaSourceMjdTai": np.full(n, mjd),
        }
    )
    for band in "ugrizy":
        flux = rng.lognormal(8, 1.5, n).astype(np.float32)  # nJy: ~21-26 mag
        frame[f"{band}_psfFluxMean"] = flux
        frame[f"{band}_psfFluxMeanErr"] = (flux * rng.uniform(0.01, 0.2, n)).astype(np.float32)
        frame[f"{band}_psfFluxSigma"] = (flux * rng.uniform(0.0, 0.3, n)).astype(np.float32)
        frame[f"{band}_psfFluxNdata"] = rng.integers(0, 20, n).astype(np.int32)
    frame.loc[frame.index[::7], "u_psfFluxMean"] = np.nan  # no u-band detection yet: NULL, not 0
    return frame


def make_sources(
    rng: np.random.Generator, objects: pd.DataFrame, visit: int, detector: int, mjd: float, first_id: int
) -> pd.DataFrame:
    n = len(objects)
    return pd.DataFrame(
        {
            "diaSourceId": np.arange(first_id, first_id + n, dtype=np.int64),
            "visit": np.full(n, visit, np.int64),
            "detector": np.full(n, detector, np.int16),
            "diaObjectId": objects["diaObjectId"].to_numpy(),
            "midpointMjdTai": np.full(n, mjd),
            "ra": objects["ra"].to_numpy() + rng.normal(0, 2e-5, n),
            "dec": objects["dec"].to_numpy() + rng.normal(0, 2e-5, n),
            "raErr": rng.uniform(1e-5, 5e-5, n).astype(np.float32),
            "decErr": rng.uniform(1e-5, 5e-5, n).astype(np.float32),
            "x": rng.uniform(0, 4072, n).astype(np.float32),
            "y": rng.uniform(0, 4000, n).astype(np.float32),
            "psfFlux": rng.normal(3000, 1500, n).astype(np.float32),
            "psfFluxErr": rng.uniform(50, 300, n).astype(np.float32),
            "snr": rng.uniform(5, 100, n).astype(np.float32),
            "band": rng.choice(list("ugrizy"), n),
            "isDipole": rng.random(n) < 0.05,
            "pixelFlags_edge": rng.random(n) < 0.02,
            "reliability": rng.uniform(0, 1, n).astype(np.float32),
            "psfNdata": rng.integers(200, 900, n).astype(np.int32),
            "trailNdata": rng.integers(200, 900, n).astype(np.int32),
            "dipoleNdata": rng.integers(200, 900, n).astype(np.int32),
            "bboxSize": rng.integers(15, 60, n).astype(np.int32),
            "timeProcessedMjdTai": np.full(n, mjd + 0.0004),
        }
    )


def make_forced(objects: pd.DataFrame, visit: int, detector: int, mjd: float, first_id: int) -> pd.DataFrame:
    n = len(objects)
    rng = np.random.default_rng(visit)
    return pd.DataFrame(
        {
            "diaForcedSourceId": np.arange(first_id, first_id + n, dtype=np.int64),
            "diaObjectId": objects["diaObjectId"].to_numpy(),
            "ra": objects["ra"].to_numpy(),
            "dec": objects["dec"].to_numpy(),
            "visit": np.full(n, visit, np.int64),
            "detector": np.full(n, detector, np.int16),
            "psfFlux": rng.normal(1000, 800, n).astype(np.float32),
            "psfFluxErr": rng.uniform(50, 300, n).astype(np.float32),
            "midpointMjdTai": np.full(n, mjd),
            "band": np.full(n, "r"),
            "timeProcessedMjdTai": np.full(n, mjd + 0.0004),
        }
    )


def tai(mjd: float) -> Time:
    return Time(mjd, format="mjd", scale="tai")
