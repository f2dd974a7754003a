"""Running the gateway: in the foreground (`dms gateway serve`) or on a background thread (tests, demo)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from dms.services.gateway.app import create_app


def serve(conninfo: str, host: str = "127.0.0.1", port: int = 8710, *, allow_anonymous: bool = True) -> None:
    """Serve until interrupted."""
    uvicorn.run(create_app(conninfo, allow_anonymous=allow_anonymous), host=host, port=port, log_level="info")


@contextmanager
def background(conninfo: str, host: str = "127.0.0.1", *, allow_anonymous: bool = True) -> Iterator[str]:
    """A gateway on a free port of `host` in a daemon thread; yields its base URL, stops on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(conninfo, allow_anonymous=allow_anonymous),
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
