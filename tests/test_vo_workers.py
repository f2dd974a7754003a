"""`dms serve --workers 2`: two worker processes on one port, sharing jobs through the database (issue 16).

The server runs as the real command in a subprocess, on a deployment on the session's PostgreSQL with a
partitioned catalog (DuckDB shard) and a control-database table. Which worker answers a connection is found
from /proc (the worker holding the server end of the TCP connection), so a job is created on one worker and
read, awaited and aborted on the other.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from astropy.io.votable import parse_single_table
from vo_support import publish_test_data

from dms import migrate
from dms.deployment import Deployment
from dms.loaders.catalog import TableOptions, load_files
from dms.services.vo.server import _no_delay
from dms.services.vo.uws import job_tag
from tests.pg_support import control_database, drop_database, seed_default_shard

DMS = str(Path(sys.executable).parent / "dms")
ROWS = 5000
CONE = (
    "SELECT TOP 500 id, ra, dec, mag FROM cat.obj "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra}, {dec}, 1.5)) = 1"
)
# A control-database query that runs far longer than the test (a 6-way cross join of ~100 rows each).
SLOW = "SELECT COUNT(*) AS n FROM " + ", ".join(f"TAP_SCHEMA.columns c{i}" for i in range(6))


@dataclass
class Served:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    deployment: Deployment
    env: dict[str, str]

    def workers(self) -> list[int]:
        return sorted(p for p in _children(self.process.pid) if _has_listener(p, self.port))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket 127.0.0.1:local_port <-> 127.0.0.1:remote_port (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            return fields[9]
    return None


def _has_listener(pid: int, port: int) -> bool:
    inode = _tcp_inode(port, 0)
    return inode is not None and inode in _socket_inodes(pid)


def worker_of(served: Served, client: httpx.Client) -> int:
    """The pid of the worker holding the server end of `client`'s (only) kept-alive connection."""
    client.get(f"{served.url}/tap/capabilities").raise_for_status()
    inode = _tcp_inode(served.port, _client_port(client))
    for pid in served.workers():
        if inode in _socket_inodes(pid):
            return pid
    raise AssertionError("no worker holds the connection")


def _client_port(client: httpx.Client) -> int:
    pool = client._transport._pool  # type: ignore[attr-defined]
    connection = pool.connections[0]
    stream = connection._connection._network_stream
    return int(stream.get_extra_info("socket").getsockname()[1])


@contextmanager
def clients_on_two_workers(served: Served) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two one-connection clients answered by different workers (closed afterwards)."""
    seen: dict[int, httpx.Client] = {}
    spare = []
    for _ in range(60):
        client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=1))
        pid = worker_of(served, client)
        if pid in seen:
            spare.append(client)
        else:
            seen[pid] = client
        if len(seen) == 2:
            break
    for client in spare:
        client.close()
    try:
        assert len(seen) == 2, "connections never reached a second worker"
        first, second = seen.values()
        yield first, second
    finally:
        for client in seen.values():
            client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = control_database(pg_server, "vow")
    root = tmp_path_factory.mktemp("vow")
    deployment = Deployment.create(root / "dep", database_url=pg_server.get_uri(name))
    seed_default_shard(deployment, pg_server)
    process = None
    try:
        migrate.upgrade(deployment)
        publish_test_data(deployment)
        rng = np.random.default_rng(16)
        table = pa.table(
            {
                "id": np.arange(1, ROWS + 1),
                "ra": rng.uniform(0, 20, ROWS),
                "dec": rng.uniform(-10, 10, ROWS),
                "mag": np.round(rng.uniform(12, 24, ROWS), 4),
            }
        )
        pq.write_table(table, root / "obj.parquet")
        load_files(
            deployment,
            "obj",
            [root / "obj.parquet"],
            create=TableOptions(ra="ra", dec="dec", id="id", chunk_order=4),
            progress=False,
        )
        port = free_port()
        env = {**os.environ, "DMS_DATA_DIR": str(deployment.data_dir)}
        env.pop("DMS_DATABASE_URL", None)
        process = subprocess.Popen(
            [DMS, "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        served = Served(f"http://127.0.0.1:{port}", port, process, deployment, env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(served.workers()) < 2:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            time.sleep(0.2)
        assert len(served.workers()) == 2
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{served.url}/tap/availability", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield served
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        deployment.dispose()
        drop_database(pg_server, name)


def tap_rows(client: httpx.Client, url: str, query: str) -> list[tuple[Any, ...]]:
    response = client.get(f"{url}/tap/sync", params={"LANG": "ADQL", "QUERY": query})
    assert response.status_code == 200, response.text
    table = parse_single_table(io.BytesIO(response.content)).to_table()
    return sorted(tuple(_plain(v) for v in row) for row in table.iterrows())


def cli_rows(served: Served, query: str) -> list[tuple[Any, ...]]:
    """The same query through `dms query` (the engine in another process), as the CLI writes CSV."""
    done = subprocess.run(
        [DMS, "query", "--lang", "adql", "--format", "csv", query],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    reader = csv.reader(io.StringIO(done.stdout))
    next(reader)
    return sorted(tuple(_plain(_number(v)) for v in row) for row in reader)


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return round(value, 9) if isinstance(value, float) else value


def test_two_worker_processes_serve_the_port(served: Served) -> None:
    workers = served.workers()
    assert len(workers) == 2 and served.process.pid not in workers


def test_every_worker_answers_as_dms_query(served: Served) -> None:
    queries = [
        CONE.format(ra=5.0, dec=0.0),
        CONE.format(ra=12.5, dec=-4.0),
        "SELECT COUNT(*) AS n, MIN(mag) AS faintest FROM cat.obj WHERE dec > 3",
        "SELECT id, mag FROM cat.obj WHERE id IN (1, 77, 4999)",
    ]
    with clients_on_two_workers(served) as (first, second):
        for query in queries:
            expected = cli_rows(served, query)
            assert expected, query
            assert tap_rows(first, served.url, query) == expected
            assert tap_rows(second, served.url, query) == expected


def test_parallel_requests_all_answered_correctly(served: Served) -> None:
    """64 requests at once over 16 connections, both workers busy: every answer is its own query's."""
    rng = np.random.default_rng(3)
    centres = [(float(rng.uniform(2, 18)), float(rng.uniform(-8, 8))) for _ in range(8)]
    expected = {c: cli_rows(served, CONE.format(ra=c[0], dec=c[1])) for c in centres}

    async def run() -> list[tuple[tuple[float, float], bytes]]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=16)) as http:

            async def one(centre: tuple[float, float]) -> tuple[tuple[float, float], bytes]:
                query = CONE.format(ra=centre[0], dec=centre[1])
                response = await http.get(f"{served.url}/tap/sync", params={"LANG": "ADQL", "QUERY": query})
                assert response.status_code == 200, response.text
                return centre, response.content

            return await asyncio.gather(*(one(centres[i % 8]) for i in range(64)))

    for centre, content in asyncio.run(run()):
        table = parse_single_table(io.BytesIO(content)).to_table()
        rows = sorted(tuple(_plain(v) for v in row) for row in table.iterrows())
        assert rows == expected[centre]


def test_async_job_created_on_one_worker_is_served_by_the_other(served: Served) -> None:
    query = CONE.format(ra=7.0, dec=2.0)
    with clients_on_two_workers(served) as (first, second):
        created = first.post(f"{served.url}/tap/async", data={"LANG": "ADQL", "QUERY": query})
        assert created.status_code == 303
        job_url = created.headers["location"]
        assert "PENDING" in second.get(f"{job_url}/phase").text
        assert second.post(f"{job_url}/phase", data={"PHASE": "RUN"}).status_code == 303
        phase = first.get(job_url, params={"WAIT": "60", "PHASE": "QUEUED"}).text
        deadline = time.monotonic() + 120
        while "COMPLETED" not in second.get(f"{job_url}/phase").text and time.monotonic() < deadline:
            second.get(job_url, params={"WAIT": "5"})
        assert second.get(f"{job_url}/phase").text == "COMPLETED", phase
        for client in (first, second):
            result = client.get(f"{job_url}/results/result")
            assert result.status_code == 200
            table = parse_single_table(io.BytesIO(result.content)).to_table()
            rows = sorted(tuple(_plain(v) for v in row) for row in table.iterrows())
            assert rows == cli_rows(served, query)
        assert second.delete(job_url).status_code == 303
        assert first.get(job_url).status_code == 404


def test_abort_on_another_worker_stops_the_running_query(served: Served) -> None:
    """A job runs on the worker that took its RUN; ABORT sent to the other worker ends the job and its
    query (the running worker sees the phase change in the database and cancels the query)."""
    with clients_on_two_workers(served) as (first, second):
        created = first.post(f"{served.url}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"})
        assert created.status_code == 303
        job_url = created.headers["location"]
        job_id = job_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 60
        while not _job_backends(served, job_id) and time.monotonic() < deadline:
            assert second.get(f"{job_url}/phase").text in ("QUEUED", "EXECUTING")
            time.sleep(0.1)
        assert _job_backends(served, job_id) == 1, "the slow query should be running"
        assert second.post(f"{job_url}/phase", data={"PHASE": "ABORT"}).status_code == 303
        assert first.get(f"{job_url}/phase").text == "ABORTED"
        deadline = time.monotonic() + 20
        while _job_backends(served, job_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _job_backends(served, job_id) == 0, "the aborted job's query still runs"
        assert second.get(f"{job_url}/phase").text == "ABORTED"


def _job_backends(served: Served, job_id: str) -> int:
    with served.deployment.engine().connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :tag AND state = 'active'"
                ),
                {"tag": job_tag(job_id)},
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"LANG": "ADQL", "QUERY": "SELEC id FROM cat.obj"}, 400, "line 1"),
        ({"LANG": "ADQL", "QUERY": "SELECT id FROM cat.nothing"}, 400, "unknown table"),
        ({"LANG": "KLINGON", "QUERY": "SELECT 1"}, 400, "LANG"),
        ({"LANG": "ADQL"}, 400, "QUERY is missing"),
        ({"LANG": "ADQL", "QUERY": "SELECT id FROM cat.obj", "MAXREC": "-3"}, 400, "MAXREC"),
    ],
)
def test_bad_input_is_a_4xx_on_every_worker(
    served: Served, params: dict[str, str], status: int, words: str
) -> None:
    with clients_on_two_workers(served) as (first, second):
        for client in (first, second):
            response = client.get(f"{served.url}/tap/sync", params=params)
            assert response.status_code == status, response.text
            assert words.lower() in response.text.lower()
            assert 'value="ERROR"' in response.text


def test_the_protocol_turns_off_nagle_on_sockets_uvicorn_binds() -> None:
    """uvicorn binds with proto 0, on which asyncio leaves Nagle's algorithm on; the protocol turns it off."""

    async def run() -> tuple[int, int]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn binds: proto 0
        listener.bind(("127.0.0.1", 0))
        found: list[tuple[int, int]] = []
        accepted = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                before = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                _no_delay(transport)
                found.append((before, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
                accepted.set()

        loop = asyncio.get_running_loop()
        server = await loop.create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        await asyncio.wait_for(accepted.wait(), 10)
        writer.close()
        server.close()
        return found[0]

    before, after = asyncio.run(run())
    assert after == 1
    assert before in (0, 1)  # 0 with the standard loop (the defect), 1 where the loop sets it itself


def test_a_job_of_a_killed_worker_ends_in_error_and_its_query_stops(served: Served) -> None:
    """SIGKILL the worker running a job: the other worker finds the job without a lease (its holder's
    database session ended) and ends it in ERROR with a message, terminating the query the dead worker left
    running; uvicorn starts a worker in the killed one's place (issue 16, item 3)."""
    with clients_on_two_workers(served) as (first, second):
        running = worker_of(served, first)
        created = first.post(f"{served.url}/tap/async", data={"LANG": "ADQL", "QUERY": SLOW, "PHASE": "RUN"})
        job_url = created.headers["location"]
        job_id = job_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 60
        while not _job_backends(served, job_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _job_backends(served, job_id) == 1, "the slow query should be running"
        os.kill(running, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while second.get(f"{job_url}/phase").text != "ERROR" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert second.get(f"{job_url}/phase").text == "ERROR"
        assert "server process running the job stopped" in second.get(f"{job_url}/error").text
        assert _job_backends(served, job_id) == 0, "the dead worker's query still runs"
    deadline = time.monotonic() + 120
    while len(served.workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(served.workers()) == 2  # the next tests have two workers again
