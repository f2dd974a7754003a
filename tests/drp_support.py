"""Shared fixtures of the DRP tests: a simulated survey (3 detectors x 4 visits in g and r, with pointing
errors and clouds) in its own migrated database, one detector's master bias corrupted and another's r flat
removed, and the DRP run once over it on a real Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from dms import migrate
from dms.deployment import Deployment
from dms.services.backbone import Backbone
from dms.services.batch.runner import open_cluster
from dms.services.drp.production import DrpParameters, ReleaseRun, run_release
from dms.services.drp.survey import SurveySpec, simulate_survey
from dms.services.prompt.simulate import SimulatedNight
from tests.pg_support import control_database, drop_database, seed_default_shard

SPEC = SurveySpec(visits=4, detectors=3, size=(256, 256), bands="gr", seed=5)
RELEASE = "drptest"


@dataclass
class Survey:
    deployment: Deployment
    night: SimulatedNight
    run: ReleaseRun
    params: DrpParameters
    corrupt_detector: int
    flatless: tuple[int, str]
    client: Any


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=1)


def _break_calibrations(deployment: Deployment, night: SimulatedNight) -> tuple[int, tuple[int, str]]:
    """Overwrite one detector's master bias with other bytes, and remove another's r-band flat."""
    backbone = Backbone(deployment)
    corrupt, flatless = night.detectors[2], (night.detectors[1], "r")
    ref = backbone.find("bias", night.bias[corrupt].data_id)
    assert ref is not None and ref.path is not None
    path = backbone.store().absolute(ref.path)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-100:] = b"x" * 100
    path.write_bytes(bytes(data))
    flat = backbone.find("flat", night.flat(*flatless).data_id)
    assert flat is not None
    with deployment.connect() as conn:
        conn.execute(sa.text("DELETE FROM dms.datastore_record WHERE dataset_id = :i"), {"i": flat.id})
        conn.execute(sa.text("DELETE FROM dms.dataset WHERE id = :i"), {"i": flat.id})
        conn.commit()
    return corrupt, flatless


@pytest.fixture(scope="session")
def drp_survey(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Survey]:
    name = control_database(pg_server, "drp")
    deployment = Deployment.create(tmp_path_factory.mktemp("drp"), database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    migrate.upgrade(deployment)
    night = simulate_survey(deployment, SPEC)
    corrupt, flatless = _break_calibrations(deployment, night)
    client = open_cluster(workers=1, threads=2, processes=False)
    ra, dec = night.field_center
    params = DrpParameters(release=RELEASE, data_dir=str(deployment.data_dir), ra=ra, dec=dec, radius=0.5)
    run = run_release(deployment, params, client=client)
    yield Survey(deployment, night, run, params, corrupt, flatless, client)
    client.close()
    deployment.dispose()
    drop_database(pg_server, name)


def query(deployment: Deployment, sql: str) -> pd.DataFrame:
    from dms.query.engine import QueryEngine

    with QueryEngine(deployment) as engine:
        return engine.execute(sql).table.to_pandas()
