"""Cheap anonymous denial of service, tried over real HTTP (issue 11, item 5).

Long-polls that must not hold threads, request bodies over the cap (declared and streamed), too many form
parts, stored uploads that must go with their job, a sync query whose client leaves, and the database
backend of a job whose server was killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import io
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from astropy.table import Table
from vo_support import LiveVO, live_vo_fixture  # noqa: F401 (the live_vo fixture)

from dms.services.vo.limits import RequestLimits
from dms.services.vo.server import running_server

SLOW = (
    "SELECT COUNT(*) FROM survey.obj AS a, survey.obj AS b, survey.obj AS c "
    "WHERE DISTANCE(POINT(a.ra, a.dec), POINT(b.ra, b.dec)) < c.mag"
)
QUICK = {"LANG": "ADQL", "QUERY": "SELECT TOP 1 id FROM survey.obj"}


def backends(vo: LiveVO, where: str, **args: str) -> list[int]:
    with vo.deployment.engine().connect() as conn:
        return list(
            conn.execute(
                sa.text(f"SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND {where}"), args
            ).scalars()
        )


def slow_queries(vo: LiveVO) -> list[int]:
    """Backends running a user query (its text, or the MOVE or FETCH of its server-side cursor)."""
    return backends(
        vo,
        "state = 'active' AND (query LIKE '%AS c WHERE%' OR query LIKE 'FETCH FORWARD %\"dms_query\"' "
        "OR query LIKE 'MOVE FORWARD ALL IN \"dms_query\"')",
    )


def wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


def test_sixty_long_polls_do_not_starve_a_sync_query(live_vo: LiveVO) -> None:
    job_url = httpx.post(f"{live_vo.url}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW}).headers["location"]

    async def scenario() -> list[int]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            polls = [asyncio.create_task(client.get(job_url, params={"WAIT": "30"})) for _ in range(60)]
            await asyncio.sleep(2.0)  # every long-poll is waiting in the server
            answer = await client.get(f"{live_vo.url}/tap/sync", params=QUICK)
            assert answer.status_code == 200 and "<TABLEDATA>" in answer.text
            # Answered while every long-poll still waits (before: 40 threads held by WAIT, the sync query
            # waited for them to end).
            assert not any(p.done() for p in polls)
            await client.post(f"{job_url}/phase", data={"PHASE": "ABORT"})  # ends every WAIT at once
            done = await asyncio.gather(*polls)
            return [r.status_code for r in done]

    assert asyncio.run(scenario()) == [200] * 60
    httpx.delete(job_url)


def raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def read_response(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data or len(data) < 200:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.decode(errors="replace")


def test_a_declared_huge_body_is_refused_before_reading(live_vo: LiveVO) -> None:
    sock = raw_request(
        f"{live_vo.url}/tap/sync",
        "POST /tap/sync HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 950000000\r\n\r\n",
    )
    with sock:
        status, text = read_response(sock)
    assert status == 413 and "larger than this service accepts" in text


@pytest.fixture(scope="module")
def capped(live_vo: LiveVO) -> Iterator[str]:
    """The same deployment with a 5 MB request cap."""
    with running_server(live_vo.deployment, limits=RequestLimits(max_body_bytes=5_000_000)) as url:
        yield url


def test_a_streamed_body_is_cut_off_at_the_cap(capped: str) -> None:
    """A chunked upload of up to 300 MB: the server answers 413 once 5 MB have arrived, and stops reading."""
    sock = raw_request(
        capped,
        "POST /tap/sync HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    part = b'--b\r\nContent-Disposition: form-data; name="t"; filename="t.xml"\r\n\r\n'
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))  # a well-formed file part that never ends
    chunk = b"x" * 1_000_000
    sent = 0
    with sock:
        while sent < 300_000_000:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, text = read_response(sock)
    assert status == 413 and "5,000,000 bytes" in text
    assert sent < 60_000_000  # it did not swallow the whole body (socket buffers hold a few MB)


def test_too_many_parts_are_refused(live_vo: LiveVO) -> None:
    files = {f"t{i}": (f"t{i}.xml", b"<VOTABLE/>") for i in range(20)}
    response = httpx.post(f"{live_vo.url}/tap/sync", data=QUICK, files=files)
    assert response.status_code == 413 and "Too many files" in response.text
    fields = {f"F{i}": "1" for i in range(300)}
    response = httpx.post(f"{live_vo.url}/tap/sync", data={**QUICK, **fields})
    assert response.status_code == 413 and "Too many fields" in response.text


def upload_job(vo: LiveVO) -> tuple[str, Path]:
    """An async job with an inline upload; returns its URL and the stored upload's file."""
    buffer = io.BytesIO()
    Table({"tid": [1, 2]}).write(buffer, format="votable")
    before = set(uploads_dir(vo).iterdir())
    response = httpx.post(
        f"{vo.url}/tap/async",
        data={"LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t", "UPLOAD": "t,param:t"},
        files={"t": ("t.xml", buffer.getvalue())},
    )
    assert response.status_code == 303, response.text
    (stored,) = set(uploads_dir(vo).iterdir()) - before
    return str(response.headers["location"]), stored


def uploads_dir(vo: LiveVO) -> Path:
    return vo.deployment.data_dir / "vo" / "uploads"


def test_stored_uploads_go_with_their_job(live_vo: LiveVO) -> None:
    deleted_url, deleted_file = upload_job(live_vo)
    destroyed_url, destroyed_file = upload_job(live_vo)
    assert deleted_file.is_file() and destroyed_file.is_file()
    assert httpx.delete(deleted_url).status_code == 303
    assert not deleted_file.exists()
    with live_vo.deployment.engine().begin() as conn:  # its destruction time passes
        conn.execute(
            sa.text("UPDATE dms.job SET destruction_time = now() - interval '1 hour' WHERE job_id = :id"),
            {"id": destroyed_url.rsplit("/", 1)[1]},
        )
    httpx.get(f"{live_vo.url}/tap/async")  # any listing sweeps destroyed jobs
    assert httpx.get(destroyed_url).status_code == 404
    assert not destroyed_file.exists()


def test_orphaned_uploads_are_removed_at_start_up(live_vo: LiveVO) -> None:
    kept_url, kept = upload_job(live_vo)
    orphan = uploads_dir(live_vo) / f"{'ab' * 16}.xml"
    fresh = uploads_dir(live_vo) / f"{'cd' * 16}.xml"
    orphan.write_bytes(b"<VOTABLE/>")
    fresh.write_bytes(b"<VOTABLE/>")
    an_hour_ago = time.time() - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    os.utime(kept, (an_hour_ago, an_hour_ago))
    with running_server(live_vo.deployment):
        pass
    assert not orphan.exists()
    assert kept.is_file()  # its job still needs it
    assert fresh.is_file()  # may belong to a job being submitted right now
    fresh.unlink()
    httpx.delete(kept_url)


def test_a_sync_query_is_cancelled_when_its_client_goes_away(live_vo: LiveVO) -> None:
    assert not slow_queries(live_vo)
    outcome: list[BaseException] = []

    def client() -> None:
        try:
            httpx.get(f"{live_vo.url}/tap/sync", params={"LANG": "ADQL", "QUERY": SLOW}, timeout=4.0)
        except httpx.ReadTimeout as exc:  # the client gives up and closes its connection
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    assert wait_until(lambda: slow_queries(live_vo), 3.5)  # the query is running in the database
    thread.join()
    assert outcome
    # before: the query ran on for minutes (the sync time limit is 300 s)
    assert wait_until(lambda: not slow_queries(live_vo), 10)


SERVER = """
import sys, uvicorn
from pathlib import Path
from dms.deployment import Deployment
from dms.services.vo.app import make_app
app = make_app(Deployment.open(Path(sys.argv[1])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_backends_of_a_killed_server_are_terminated_before_the_job_runs_again(live_vo: LiveVO) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(live_vo.deployment.data_dir), str(port)], env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(f"{base}/tap/availability"), 30)
        job_url = httpx.post(
            f"{base}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"}
        ).headers["location"]
        job_id = job_url.rsplit("/", 1)[1]
        tag = f"dms-job-{job_id}"
        assert wait_until(lambda: backends(live_vo, "application_name = :t AND state = 'active'", t=tag), 20)
        (first,) = backends(live_vo, "application_name = :t", t=tag)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    time.sleep(1.0)
    assert first in slow_queries(live_vo)  # the killed server's query runs on without it
    with running_server(live_vo.deployment) as url:
        assert wait_until(lambda: first not in backends(live_vo, "true"), 10)
        # the job runs again, once: one backend with its tag, never the old one beside a new one
        assert wait_until(lambda: backends(live_vo, "application_name = :t", t=tag), 20)
        for _ in range(20):
            assert len(backends(live_vo, "application_name = :t", t=tag)) <= 1
            time.sleep(0.05)
        assert "EXECUTING" in httpx.get(f"{url}/tap/async/{job_id}/phase").text
        httpx.delete(f"{url}/tap/async/{job_id}")
    assert wait_until(lambda: not slow_queries(live_vo), 10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
