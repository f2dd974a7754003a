"""Shared fixtures of the alert feed tests: a NATS JetStream server of the test's own (so a test can restart
it), the migrated deployment's PostgreSQL log emptied per test, and realistic alert packets of a visit
(APDB-like rows serialised with Rubin's schema from lsst-alert-packet)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from apdb_support import field_positions, make_forced, make_objects, make_sources

from dms.deployment import Deployment
from dms.services.alerts.batch import batch_packets
from dms.services.alerts.feed import AlertFeed, FeedConfig, open_feed
from dms.services.alerts.feed.postgres import conninfo
from dms.services.vo.server import serve_in_thread

MJD = 60_950.3
FEED_TABLES = "dms.alert_feed_delivery, dms.alert_feed_offset, dms.alert_feed_message, dms.alert_feed_topic"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    """A `nats-server -js` process of the test's own, restartable on the same port and store."""

    store: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture()
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed (Debian package nats-server; .ci/run installs it)")
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def feed_url(deployment: Deployment) -> str:
    """The deployment's control database, its feed tables emptied."""
    with deployment.engine().begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {FEED_TABLES} CASCADE"))
    return conninfo(FeedConfig(database_url=str(deployment.control_url().render_as_string(False))))


@pytest.fixture(params=["postgres", "nats"])
def feed_config(request: pytest.FixtureRequest) -> FeedConfig:
    """The same tests on both transports."""
    if request.param == "postgres":
        return FeedConfig(transport="postgres", database_url=request.getfixturevalue("feed_url"))
    server: NatsServer = request.getfixturevalue("nats_server")
    return FeedConfig(transport="nats", nats_url=server.url, ack_wait_s=60)


@pytest.fixture()
def feed(feed_config: FeedConfig) -> Iterator[AlertFeed]:
    with open_feed(feed_config) as f:
        yield f


def visit_alerts(visit: int, first_id: int, n: int = 200) -> tuple[pd.DataFrame, list[bytes]]:
    """One visit's DiaSources and their alert packets (Confluent header + Avro, Rubin's schema)."""
    rng = np.random.default_rng(visit)
    objects = make_objects(
        rng, np.arange(first_id, first_id + n), field_positions(rng, n, 150.0, 2.0, 1.0), MJD
    )
    objects["validityStartMjdTai"] = MJD
    sources = make_sources(rng, objects, visit=visit, detector=42, mjd=MJD + visit / 1000, first_id=first_id)
    forced = make_forced(objects, visit=visit - 1, detector=42, mjd=MJD - 1, first_id=first_id)
    return sources, batch_packets(sources, objects, None, forced)


@contextmanager
def running_feed(app: Any) -> Iterator[str]:
    """Serve a feed app on a free localhost port in a background thread; yields its base URL."""
    try:
        with serve_in_thread(app) as base:
            yield base
    finally:
        app.state.close()
