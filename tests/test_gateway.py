"""The Telemetry Gateway over real HTTP: events arrive live, and a subscriber that reconnects resumes
from its last event id without losing or repeating any."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from dms.deployment import Deployment
from dms.loaders.efd.db import conninfo
from dms.loaders.qc import api
from dms.loaders.qc.api import Measurement
from dms.services.gateway import client, server
from tests.efd_support import efd_conn, efd_deployment

__all__ = ["efd_conn", "efd_deployment"]


@pytest.fixture()
def gateway(efd_deployment: Deployment, efd_conn: psycopg.Connection[Any]) -> Iterator[str]:
    api.add_metric(efd_conn, "ip_diffim.psf_fwhm", "arcsec", "PSF FWHM")
    api.add_threshold(efd_conn, "psf_fwhm.design", "ip_diffim.psf_fwhm", "<=", 1.2, "arcsec", "design")
    with server.background(conninfo(efd_deployment)) as url:
        yield url


def measure(conn: psycopg.Connection[Any], value: float) -> int:
    return api.insert_measurement(conn, Measurement("ip_diffim.psf_fwhm", value, production="prompt"))


def stored_events(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    return [
        (r[0], r[1]) for r in conn.execute("SELECT event_id, kind FROM dms.gateway_event ORDER BY event_id")
    ]


def test_live_events_then_resume_after_reconnect(gateway: str, efd_conn: psycopg.Connection[Any]) -> None:
    received: list[client.Event] = []
    connected = threading.Event()

    def first_session() -> None:
        for event in client.subscribe(gateway, after=0, timeout=20, on_open=connected.set):
            received.append(event)
            if len(received) == 3:  # measurement, alarm raised, measurement: then the subscriber drops
                return

    measure(efd_conn, 0.9)  # before the subscriber connects: replayed from after=0
    thread = threading.Thread(target=first_session)
    thread.start()
    assert connected.wait(10)
    measure(efd_conn, 1.5)  # raises an alarm, pushed live
    thread.join(20)
    assert [e.kind for e in received] == ["qc_measurement", "qc_measurement", "qc_alarm_raised"]
    assert received[2].payload["message"].startswith("ip_diffim.psf_fwhm = 1.5 arcsec")

    measure(efd_conn, 1.6)  # while disconnected: a repeat of the alarm
    measure(efd_conn, 1.0)  # recovery: the alarm clears
    resumed = []
    for event in client.subscribe(gateway, after=received[-1].event_id, timeout=20):
        resumed.append(event)
        if event.kind == "qc_alarm_cleared":
            break
    everything = [(e.event_id, e.kind) for e in received + resumed]
    assert everything == stored_events(efd_conn)  # nothing lost, nothing repeated, in order
    assert resumed[-1].payload["state"] == "cleared" and resumed[-1].payload["occurrences"] == 2


def test_a_new_subscriber_without_position_gets_only_new_events(
    gateway: str, efd_conn: psycopg.Connection[Any]
) -> None:
    measure(efd_conn, 0.5)
    got: list[client.Event] = []
    ready = threading.Event()

    def listen() -> None:
        for event in client.subscribe(gateway, timeout=20, on_open=ready.set):
            got.append(event)
            return

    thread = threading.Thread(target=listen)
    thread.start()
    assert ready.wait(10)  # the gateway has fixed the stream's start: later events are delivered
    measure(efd_conn, 0.6)
    thread.join(20)
    assert len(got) == 1 and got[0].payload["value"] == 0.6


def test_bad_position_and_health(gateway: str) -> None:
    bad = httpx.get(f"{gateway}/events", headers={"Last-Event-ID": "x1"}, timeout=10)
    assert bad.status_code == 400 and "non-negative integer" in bad.text
    assert httpx.get(f"{gateway}/health", timeout=10).json()["status"] == "ok"


def test_isolated_events_under_load_are_each_delivered_to_every_subscriber(
    gateway: str, efd_conn: psycopg.Connection[Any]
) -> None:
    """Bursts of two events committed back to back, each burst once every subscriber has the one before:
    the second commit's notification tends to arrive while the gateway is still querying for the first
    (the window where a wake-up used to be lost). Every event must reach each of several concurrent
    subscribers live (not at the next keepalive), once and in order."""
    bursts, subscribers = 75, 8
    start = stored_events(efd_conn)[-1][0] if stored_events(efd_conn) else 0
    received: list[list[int]] = [[] for _ in range(subscribers)]
    changed = threading.Condition()
    opened = threading.Barrier(subscribers + 1)

    def listen(mine: list[int]) -> None:
        for event in client.subscribe(gateway, after=start, timeout=60, on_open=opened.wait):
            with changed:
                mine.append(event.event_id)
                changed.notify_all()
            if len(mine) == 2 * bursts:
                return

    threads = [threading.Thread(target=listen, args=(r,), daemon=True) for r in received]
    for thread in threads:
        thread.start()
    opened.wait(timeout=20)
    late = []
    for i in range(bursts):
        for value in (0.5, 0.6):  # each below the threshold: one event (its measurement) per commit
            measure(efd_conn, value + i / 1000)
        with changed:
            # Half the keepalive interval: a lost wake-up is only repaired by the 15 s keepalive.
            def arrived(n: int = 2 * (i + 1)) -> bool:
                return all(len(r) >= n for r in received)

            if not changed.wait_for(arrived, timeout=7.5):
                late.append(i)
                changed.wait_for(arrived, timeout=20)
    for thread in threads:
        thread.join(20)
    assert late == [], f"bursts {late} reached a subscriber only after the keepalive"
    expected = [event_id for event_id, kind in stored_events(efd_conn) if event_id > start]
    assert len(expected) == 2 * bursts
    assert all(r == expected for r in received)  # every event, once, in order, to every subscriber
