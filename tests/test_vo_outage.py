"""The VO services while PostgreSQL is stopped (issue 11, item 16).

A PostgreSQL server of its own (pgserver) that the test stops and starts again: every endpoint answers 503
with a DALI error document saying the database cannot be reached, /tap/availability says so at once, and a
job that was EXECUTING when the database went away ends in ERROR once it is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from vo_support import publish_test_data

from dms import migrate
from dms.deployment import Deployment
from dms.services.vo.server import running_server
from tests.pg_support import create_database

SLOW = (
    "SELECT COUNT(*) FROM survey.obj AS a, survey.obj AS b, survey.obj AS c "
    "WHERE DISTANCE(POINT(a.ra, a.dec), POINT(b.ra, b.dec)) < c.mag"
)


@pytest.fixture()
def own_server(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second PostgreSQL server, stopped by the test (the session's server, started first, makes the
    temporary directories readable by pgserver's system user)."""
    import pgserver

    server = pgserver.get_server(Path(tmp_path_factory.mktemp("pgo", numbered=True)), cleanup_mode="delete")
    yield server
    server.cleanup()


def stop(server: Any) -> None:
    import pgserver

    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def test_a_stopped_database_is_a_503_and_a_running_job_ends_in_error(own_server: Any, tmp_path: Path) -> None:
    deployment = Deployment.create(
        tmp_path / "dep", database_url=own_server.get_uri(create_database(own_server, "outage"))
    )
    migrate.upgrade(deployment)
    publish_test_data(deployment)
    with running_server(deployment) as url:
        job_url = httpx.post(
            f"{url}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"}
        ).headers["location"]
        deadline = time.monotonic() + 20
        while "EXECUTING" not in httpx.get(f"{job_url}/phase").text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{job_url}/phase").text == "EXECUTING"
        assert "true" in httpx.get(f"{url}/tap/availability").text

        stop(own_server)
        availability = httpx.get(f"{url}/tap/availability", timeout=10)
        assert "<available>false</available>" in availability.text
        assert "cannot be reached" in availability.text
        sync = f"{url}/tap/sync?LANG=ADQL&QUERY=SELECT+TOP+1+id+FROM+survey.obj"
        for endpoint in (
            sync,
            f"{url}/tap/async",
            job_url,
            f"{url}/tap/async/{'0' * 32}",
            f"{url}/sia/query?POS=CIRCLE+10+20+1",
            f"{url}/datalink?ID=ivo://dms.example/image?0",
            f"{url}/scs/survey.obj?RA=10&DEC=20&SR=0.1",
            f"{url}/",
        ):
            response = httpx.get(endpoint, timeout=15, headers={"Authorization": "Bearer dms_x"})
            assert response.status_code == 503, (endpoint, response.status_code, response.text)
            assert "the database cannot be reached" in response.text
            assert 'name="QUERY_STATUS" value="ERROR"' in response.text
            anonymous = httpx.get(endpoint, timeout=15)
            assert anonymous.status_code == 503, (endpoint, anonymous.text)

        own_server.ensure_postgres_running()
        deadline = time.monotonic() + 30
        phase = ""
        while time.monotonic() < deadline:
            response = httpx.get(f"{job_url}/phase")
            phase = response.text if response.status_code == 200 else phase
            if phase not in ("", "EXECUTING"):
                break
            time.sleep(0.2)
        assert phase == "ERROR"  # before: EXECUTING until the server restarted
        error = httpx.get(job_url).text
        assert "database connection was lost" in error and 'type="transient"' in error
        assert "true" in httpx.get(f"{url}/tap/availability").text
        assert httpx.get(sync).status_code == 200
    deployment.dispose()
