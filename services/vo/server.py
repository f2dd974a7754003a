"""Running the VO services: `dms serve` (one or several worker processes), the demo, and a server in a
thread for tests and benchmarks.

With several workers, uvicorn's supervisor binds the port and each worker process builds its own app from
the deployment named by DMS_DATA_DIR; everything they share (UWS jobs, users, TAP_SCHEMA) lives in the
database. Jobs a previous server left running are recovered once, by the supervisor, before any worker
starts (a worker starting later must not mistake another worker's running job for a left-over one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dms.deployment import Deployment
from dms.services.vo.app import make_app
from dms.services.vo.executor import QueryExecutor
from dms.services.vo.limits import RequestLimits
from dms.services.vo.tap import remove_orphan_uploads
from dms.services.vo.tap_schema import sync
from dms.services.vo.uws import recover_jobs

log = logging.getLogger(__name__)

WORKER_DATA_DIR = "DMS_DATA_DIR"  # how a worker process finds its deployment
MAX_DEFAULT_WORKERS = 8
WORKER_HEALTHCHECK_SECONDS = 60  # uvicorn's 5 s kills workers still importing on a busy machine


def default_workers() -> int:
    """One worker per core this process may run on (at most 8): a TAP query is CPU-bound Python."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def _no_delay(transport: asyncio.BaseTransport) -> None:
    """Send small writes at once. asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP,
    and the sockets uvicorn binds have proto 0: the body then waits behind the headers for the client's
    delayed ACK, adding 40 ms to every request on a kept-alive connection."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (a C parser, several times faster than h11) with TCP_NODELAY."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _no_delay(transport)
        super().connection_made(transport)


def prepare(deployment: Deployment) -> None:
    """Bring TAP_SCHEMA up to date with the published Felis schemas (idempotent)."""
    with deployment.connect() as conn:
        sync(conn)
        conn.commit()


def demo_step(deployment: Deployment, echo: Callable[[str], None] = print) -> None:
    """The VO step of `dms demo` (fast, idempotent): publish TAP_SCHEMA and say how to serve it."""
    prepare(deployment)
    with deployment.connect() as conn:
        tables = conn.execute(sa.text("SELECT count(*) FROM tap_schema.tables")).scalar_one()
    echo(
        f"VO services: {tables} tables published in TAP_SCHEMA; `dms serve` serves TAP, SCS, SIA and DataLink"
    )


def serve_forever(
    deployment: Deployment,
    host: str,
    port: int,
    echo: Callable[[str], None] = print,
    *,
    workers: int = 1,
) -> None:
    """`dms serve`: publish, recover left-over jobs, print the URLs, serve with `workers` processes until
    interrupted."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    prepare(deployment)
    removed = remove_orphan_uploads(deployment)
    if removed:
        log.info("removed %d stored uploads no job refers to", removed)
    recovered = recover_jobs(deployment, "tap")
    if recovered:
        log.info("queued again %d TAP jobs left by a previous server", recovered)
    for line in urls(f"http://{host}:{port}"):
        echo(line)
    echo(f"  {workers} worker process{'es' if workers > 1 else ''}")
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning", "http": NoDelayProtocol}
    if workers == 1:
        uvicorn.run(make_app(deployment, recover_jobs=False), **options)
        return
    os.environ[WORKER_DATA_DIR] = str(deployment.data_dir)
    deployment.dispose()  # the supervisor serves nothing: its idle connections would only hold slots
    # Workers are spawned processes that must answer the supervisor's health checks while they start:
    # the protocol and the app go by import path (imported after the health-check thread is up, not
    # while the configuration is unpickled), and a start on a loaded machine may take a while.
    options["http"] = f"{__name__}:NoDelayProtocol"
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **options,
    )


def worker_app() -> Starlette:
    """The app of one `dms serve --workers N` process (uvicorn's factory), on the supervisor's deployment."""
    deployment = Deployment.open(Path(os.environ[WORKER_DATA_DIR]))
    return make_app(deployment, recover_jobs=False)


def serve_demo(
    deployment: Deployment, host: str = "127.0.0.1", port: int = 8000, echo: Callable[[str], None] = print
) -> None:
    """The last step of `dms demo`: serve everything on localhost with a pyvo / TOPCAT example."""
    serve_forever(deployment, host, port, echo)


def urls(base: str) -> list[str]:
    return [
        f"VO services at {base}/ (Ctrl-C stops them)",
        f"  Portal   {base}/portal/ (log in with a token from `dms users token NAME`)",
        f"  TAP      {base}/tap",
        f"  SIA 2.0  {base}/sia/query",
        f"  DataLink {base}/datalink",
        f"  SCS      {base}/scs/SCHEMA.TABLE (every published table with a position)",
        f"  pyvo:    pyvo.dal.TAPService('{base}/tap').search('SELECT TOP 5 * FROM TAP_SCHEMA.tables')",
        f"  TOPCAT:  VO > Table Access Protocol (TAP) Query, TAP URL {base}/tap",
    ]


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a free localhost port in a background thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", http=NoDelayProtocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def running_server(
    deployment: Deployment, executor: QueryExecutor | None = None, limits: RequestLimits | None = None
) -> Iterator[str]:
    """Serve the VO services on a free localhost port in a background thread; yields the base URL."""
    with serve_in_thread(make_app(deployment, executor, limits)) as base:
        yield base
