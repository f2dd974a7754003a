"""TAP 1.1 through pyvo against a live server: sync, async, abort, uploads, formats, MAXREC, VOSI."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import pyvo
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from astropy.table import Table
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)

CONE = (
    "SELECT id, ra, dec FROM survey.obj "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10, 20, 0.5)) = 1"
)
SLOW = (
    "SELECT COUNT(*) FROM survey.obj AS a, survey.obj AS b, survey.obj AS c "
    "WHERE DISTANCE(POINT(a.ra, a.dec), POINT(b.ra, b.dec)) < c.mag"
)


def expected_cone(vo: LiveVO, ra: float = 10, dec: float = 20, radius: float = 0.5) -> set[int]:
    separation = SkyCoord(vo.ra, vo.dec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).deg
    return set((np.flatnonzero(separation <= radius) + 1).tolist())


@pytest.fixture(scope="module")
def tap(live_vo: LiveVO) -> pyvo.dal.TAPService:
    return pyvo.dal.TAPService(f"{live_vo.url}/tap")


def test_sync_cone_search_matches_astropy(tap: pyvo.dal.TAPService, live_vo: LiveVO) -> None:
    table = tap.search(CONE).to_table()
    assert set(table["id"].tolist()) == expected_cone(live_vo)
    assert table["ra"].unit == "deg"
    assert len(table) > 10


def test_field_metadata_comes_from_tap_schema(live_vo: LiveVO) -> None:
    body = httpx.get(
        f"{live_vo.url}/tap/sync", params={"LANG": "ADQL", "QUERY": "SELECT TOP 1 ra FROM survey.obj"}
    ).text
    assert 'ucd="pos.eq.ra;meta.main"' in body and 'unit="deg"' in body and "Right ascension" in body


def test_run_async_gives_the_sync_answer(tap: pyvo.dal.TAPService, live_vo: LiveVO) -> None:
    table = tap.run_async(CONE).to_table()
    assert set(table["id"].tolist()) == expected_cone(live_vo)


def running_slow_queries(vo: LiveVO) -> int:
    with vo.deployment.engine().connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND (query LIKE '%AS c "
                    "WHERE%' OR query LIKE 'MOVE FORWARD ALL IN \"dms_query\"') AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )


def test_submit_then_abort_cancels_the_running_query(tap: pyvo.dal.TAPService, live_vo: LiveVO) -> None:
    job = tap.submit_job(SLOW)
    job.run()
    deadline = time.monotonic() + 20
    while job.phase != "EXECUTING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.phase == "EXECUTING"
    started = time.monotonic()
    job.abort()
    assert job.phase == "ABORTED"
    assert running_slow_queries(live_vo) <= 1
    while running_slow_queries(live_vo) and time.monotonic() - started < 10:
        time.sleep(0.05)
    assert running_slow_queries(live_vo) == 0  # the database query itself was cancelled
    job.delete()


def test_async_job_lifecycle_and_uws_resources(live_vo: LiveVO) -> None:
    base = f"{live_vo.url}/tap/async"
    created = httpx.post(
        base, data={"LANG": "ADQL", "QUERY": "SELECT TOP 3 id FROM survey.obj", "RUNID": "r1"}
    )
    assert created.status_code == 303
    job_url = created.headers["location"]
    assert httpx.get(f"{job_url}/phase").text == "PENDING"
    later = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert httpx.post(f"{job_url}/destruction", data={"DESTRUCTION": later}).status_code == 303
    # UWS times are written as vo-models writes them (with milliseconds), the same instant
    assert httpx.get(f"{job_url}/destruction").text == later.replace("Z", ".000Z")
    httpx.post(f"{job_url}/phase", data={"PHASE": "RUN"})
    document = httpx.get(job_url, params={"WAIT": "10"}).text
    if "COMPLETED" not in document:
        document = httpx.get(job_url, params={"WAIT": "10"}).text
    assert "<uws:phase>COMPLETED</uws:phase>" in document and "<uws:runId>r1</uws:runId>" in document
    result = Table.read(io.BytesIO(httpx.get(f"{job_url}/results/result").content), format="votable")
    assert len(result) == 3
    # an anonymous job is reachable by its URL only, never listed
    assert job_url.rsplit("/", 1)[1] not in httpx.get(base).text
    assert httpx.delete(job_url).status_code == 303
    assert httpx.get(job_url).status_code == 404


def test_failed_job_reports_its_error(live_vo: LiveVO) -> None:
    job_url = httpx.post(
        f"{live_vo.url}/tap/async",
        data={"LANG": "ADQL", "QUERY": "SELECT nope FROM survey.obj", "PHASE": "RUN"},
    ).headers["location"]
    document = httpx.get(job_url, params={"WAIT": "10", "PHASE": "QUEUED"}).text
    document = httpx.get(job_url, params={"WAIT": "10", "PHASE": "EXECUTING"}).text
    assert "<uws:phase>ERROR</uws:phase>" in document and "nope" in document
    assert 'value="ERROR"' in httpx.get(f"{job_url}/error").text


def test_jobs_survive_a_server_restart(live_vo: LiveVO) -> None:
    from dms.services.vo.server import running_server

    job_url = httpx.post(
        f"{live_vo.url}/tap/async", data={"LANG": "ADQL", "QUERY": "SELECT TOP 2 id FROM survey.obj"}
    ).headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    with running_server(live_vo.deployment) as other:
        assert "<uws:phase>PENDING</uws:phase>" in httpx.get(f"{other}/tap/async/{job_id}").text


def test_upload_inline_joins_the_catalog(tap: pyvo.dal.TAPService, live_vo: LiveVO) -> None:
    targets = Table({"tid": [1, 2], "tra": [10.0, 11.0], "tdec": [20.0, 21.0]})
    query = (
        "SELECT t.tid, o.id FROM TAP_UPLOAD.targets AS t JOIN survey.obj AS o "
        "ON DISTANCE(POINT(t.tra, t.tdec), POINT(o.ra, o.dec)) < 0.2"
    )
    table = tap.search(query, uploads={"targets": targets}).to_table()
    got = {(int(a), int(b)) for a, b in zip(table["tid"], table["id"], strict=True)}
    expected = {(1, i) for i in expected_cone(live_vo, 10, 20, 0.2)} | {
        (2, i) for i in expected_cone(live_vo, 11, 21, 0.2)
    }
    assert got == expected and got


def test_upload_by_url(live_vo: LiveVO) -> None:
    url = (
        f"{live_vo.url}/tap/sync?LANG=ADQL&QUERY=SELECT%20TOP%205%20id%20FROM%20survey.obj%20ORDER%20BY%20id"
    )
    live_vo.deployment.config.vo_upload_allow = ["127.0.0.1"]  # the server's own address is loopback
    try:
        body = httpx.post(
            f"{live_vo.url}/tap/sync",
            data={
                "LANG": "ADQL",
                "QUERY": "SELECT COUNT(*) AS n FROM TAP_UPLOAD.ids",
                "UPLOAD": f"ids,{url}",
            },
        ).content
    finally:
        live_vo.deployment.config.vo_upload_allow = []
    assert Table.read(io.BytesIO(body), format="votable")["n"][0] == 5


def test_maxrec_overflow_and_metadata_only(tap: pyvo.dal.TAPService, live_vo: LiveVO) -> None:
    result = tap.search("SELECT id FROM survey.obj", maxrec=7)
    assert len(result) == 7 and result.query_status == "OVERFLOW"
    body = httpx.get(
        f"{live_vo.url}/tap/sync",
        params={"LANG": "ADQL", "QUERY": "SELECT id, ra FROM survey.obj", "MAXREC": "0"},
    ).text
    assert "<TR>" not in body and 'name="ra"' in body and 'value="OVERFLOW"' in body


@pytest.mark.parametrize("fmt", ["votable", "votable/b2", "csv", "tsv", "json", "parquet"])
def test_every_output_format_holds_the_rows(live_vo: LiveVO, fmt: str) -> None:
    response = httpx.get(
        f"{live_vo.url}/tap/sync",
        params={
            "LANG": "ADQL",
            "QUERY": "SELECT id, ra FROM survey.obj WHERE id <= 4 ORDER BY id",
            "RESPONSEFORMAT": fmt,
        },
    )
    assert response.status_code == 200
    if fmt.startswith("votable"):
        ids = Table.read(io.BytesIO(response.content), format="votable")["id"].tolist()
    elif fmt in ("csv", "tsv"):
        lines = response.text.strip().splitlines()
        ids = [int(line.split("," if fmt == "csv" else "\t")[0]) for line in lines[1:]]
    elif fmt == "json":
        ids = [row[0] for row in response.json()["data"]]
    else:
        parquet = pq.read_table(io.BytesIO(response.content))
        ids = parquet["id"].to_pylist()
        assert b"IVOA.VOTable-Parquet.content" in parquet.schema.metadata
    assert ids == [1, 2, 3, 4]


def test_tables_and_capabilities(tap: pyvo.dal.TAPService) -> None:
    names = {t.name for t in tap.tables}
    assert {"survey.obj", "ivoa.ObsCore", "tap_schema.tables", "tap_schema.columns"} <= names
    obj = tap.tables["survey.obj"]
    assert {c.name: c.unit for c in obj.columns}["ra"] == "deg"
    languages = [lang.name for cap in tap.capabilities for lang in getattr(cap, "languages", [])]
    assert "ADQL" in languages
    assert "dms.job" not in names


def test_tap_schema_describes_itself(tap: pyvo.dal.TAPService) -> None:
    rows = tap.search("SELECT table_name FROM TAP_SCHEMA.tables WHERE schema_name = 'tap_schema'").to_table()
    assert {
        "tap_schema.schemas",
        "tap_schema.tables",
        "tap_schema.columns",
        "tap_schema.keys",
        "tap_schema.key_columns",
    } <= set(rows["table_name"].tolist())
