"""Running the VO services: `dms serve`, the demo, and a server in a thread for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import uvicorn

from dms.deployment import Deployment
from dms.services.vo.app import make_app
from dms.services.vo.executor import QueryExecutor
from dms.services.vo.limits import RequestLimits
from dms.services.vo.tap_schema import sync


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


def serve_forever(deployment: Deployment, host: str, port: int, echo: Callable[[str], None] = print) -> None:
    """`dms serve`: publish, print the URLs, serve until interrupted."""
    prepare(deployment)
    for line in urls(f"http://{host}:{port}"):
        echo(line)
    uvicorn.run(make_app(deployment), host=host, port=port, log_level="warning")


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
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
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
