"""Shared helpers of the EFD, QC and gateway tests: a migrated control database, exposures, cleanup."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.efd.db import conninfo
from tests.pg_support import control_database, drop_database, seed_default_shard

INSTRUMENT = "LSSTCam"


@pytest.fixture(scope="module")
def efd_deployment(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An external deployment on a fresh database of the session server, migrated to head (per module)."""
    name = control_database(pg_server, "efd")
    deployment = Deployment.create(
        Path(tmp_path_factory.mktemp("efd")) / "dep", database_url=pg_server.get_uri(name)
    )
    seed_default_shard(deployment, pg_server)
    migrate.upgrade(deployment)
    yield deployment
    deployment.dispose()
    drop_database(pg_server, name)


@pytest.fixture()
def efd_conn(efd_deployment: Deployment) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the module's database, emptied of EFD, QC and exposure rows first."""
    with psycopg.connect(conninfo(efd_deployment), autocommit=True) as conn:
        reset(conn)
        yield conn


def reset(conn: psycopg.Connection[Any]) -> None:
    """Remove every topic (and its sample table), transform output, exposure and QC row."""
    with conn.transaction():
        for (table,) in conn.execute(
            "SELECT table_name FROM dms.efd_topic WHERE table_name IS NOT NULL"
        ).fetchall():
            conn.execute(f'DROP TABLE IF EXISTS efd."{table}"')
        conn.execute(
            "TRUNCATE dms.efd_transform_column, dms.efd_ingest_batch, dms.efd_transform_run, "
            "dms.efd_exposure_transform, dms.efd_topic, efd_lsstcam.exposure_efd, efd_lsstcam.visit1_efd, "
            "efd_lsstcam.exposure_efd_unpivoted, efd_lsstcam.visit1_efd_unpivoted, dms.qc_alarm, "
            "dms.qc_measurement, dms.qc_threshold, dms.qc_metric, dms.gateway_event, dms.exposure CASCADE"
        )


def add_exposure(
    conn: psycopg.Connection[Any], exposure_id: int, begin_tai: dt.datetime, seconds: float
) -> None:
    """Register an LSSTCam exposure (and the instrument, filter and day it needs) with a TAI timespan."""
    day_obs = int(begin_tai.strftime("%Y%m%d"))
    conn.execute(
        "INSERT INTO dms.instrument (name, class_name, detector_max, exposure_max, visit_max) "
        "VALUES (%s, 'lsst.obs.lsst.LsstCam', 1000, 10000000000000, 10000000000000) ON CONFLICT DO NOTHING",
        (INSTRUMENT,),
    )
    conn.execute(
        "INSERT INTO dms.physical_filter (instrument, name, band) VALUES (%s, 'r_57', 'r') "
        "ON CONFLICT DO NOTHING",
        (INSTRUMENT,),
    )
    conn.execute(
        "INSERT INTO dms.day_obs (instrument, id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (INSTRUMENT, day_obs),
    )
    conn.execute(
        "INSERT INTO dms.exposure (instrument, id, obs_id, physical_filter, day_obs, seq_num, exposure_time, "
        "timespan_begin, timespan_end) VALUES (%s, %s, %s, 'r_57', %s, %s, %s, %s, %s)",
        (
            INSTRUMENT,
            exposure_id,
            f"MC_O_{day_obs}_{exposure_id % 100000:06d}",
            day_obs,
            exposure_id % 100000,
            seconds,
            begin_tai,
            begin_tai + dt.timedelta(seconds=seconds),
        ),
    )
