"""A live VO server for tests: a migrated deployment on the session's PostgreSQL, a published synthetic
catalog (tests/data/vo_catalog.yaml), ObsCore rows, and the services on a free localhost port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from felis.datamodel import Schema

from dms import migrate
from dms.deployment import Deployment
from dms.services.vo.server import running_server
from dms.services.vo.tap_schema import sync
from tests.pg_support import control_database, drop_database, seed_default_shard

N_ROWS = 3000
CATALOG_YAML = Path(__file__).parent / "data" / "vo_catalog.yaml"


@dataclass
class LiveVO:
    url: str
    deployment: Deployment
    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray
    images: list[dict[str, Any]]


def catalog_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    ra = rng.uniform(8, 12, N_ROWS)
    dec = rng.uniform(18, 22, N_ROWS)
    mag = np.round(rng.uniform(12, 24, N_ROWS), 4)
    return ra, dec, mag


IMAGES = [
    {
        "obs_publisher_did": f"ivo://dms.example/image?{i}",
        "obs_id": f"img{i}",
        "s_ra": 10.0 + i,
        "s_dec": 20.0,
        "s_fov": 0.5,
        "em_min": 5.5e-7,
        "em_max": 6.9e-7,
        "t_min": 60000.0 + i,
        "t_max": 60000.01 + i,
        "calib_level": 2,
        "dataproduct_type": "image",
        "obs_collection": "test",
        "facility_name": "DMS",
        "instrument_name": "cam",
        "access_url": f"http://files.example/img{i}.fits",
        "access_format": "image/fits",
        "t_exptime": 30.0,
        "s_resolution": 0.7,
        "target_name": "field",
    }
    for i in range(3)
]


def publish_test_data(deployment: Deployment) -> None:
    ra, dec, mag = catalog_rows()
    with deployment.engine().begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA survey"))
        conn.execute(
            sa.text(
                "CREATE TABLE survey.obj (id bigint PRIMARY KEY, ra double precision, dec double precision, "
                "mag double precision, name varchar(64))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO survey.obj VALUES (:id, :ra, :dec, :mag, :name)"),
            [
                {
                    "id": i + 1,
                    "ra": float(ra[i]),
                    "dec": float(dec[i]),
                    "mag": float(mag[i]),
                    "name": f"star {i + 1}",
                }
                for i in range(N_ROWS)
            ],
        )
        columns = ", ".join(IMAGES[0])
        values = ", ".join(f":{k}" for k in IMAGES[0])
        conn.execute(sa.text(f'INSERT INTO ivoa."ObsCore" ({columns}) VALUES ({values})'), IMAGES)
        schema = Schema.from_uri(str(CATALOG_YAML), context={"id_generation": True})
        sync(conn, extra=[schema])


@pytest.fixture(scope="module", name="live_vo")
def live_vo_fixture(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveVO]:
    name = control_database(pg_server, "vo")
    deployment = Deployment.create(
        tmp_path_factory.mktemp("vo") / "dep", database_url=pg_server.get_uri(name)
    )
    seed_default_shard(deployment, pg_server)
    try:
        migrate.upgrade(deployment)
        publish_test_data(deployment)
        ra, dec, mag = catalog_rows()
        with running_server(deployment) as url:
            yield LiveVO(url, deployment, ra, dec, mag, IMAGES)
    finally:
        deployment.dispose()
        drop_database(pg_server, name)
