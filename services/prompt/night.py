"""A simulated night through the Prompt Processing service: the events the OCS and the camera would send.

For each visit of a SimulatedNight, in time order: a next-visit event (band, boresight, time, detectors)
while the previous visit is still being processed, then, at the end of readout, a visit-ready event; then
the visit's outcome. The events go over HTTP to a running service (`base_url`) or, without one, to a
service started here on a free local port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from dms.deployment import Deployment
from dms.services.prompt.ap_payload import AlertProductionPayload
from dms.services.prompt.errors import PromptError
from dms.services.prompt.service import PromptConfig, PromptService
from dms.services.prompt.simulate.night import SimulatedNight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisitReport:
    visit: int
    state: str
    error: str | None
    n_dia_sources: int
    n_alerts: int
    seconds: float  # visit-ready to alerts archived (the service's "total")
    timings: dict[str, float]


def next_visit_event(night: SimulatedNight, visit: int) -> dict[str, Any]:
    item = night.visit(visit)
    return {
        "visit": item.visit,
        "instrument": night.instrument,
        "mode": "science",
        "band": item.band,
        "ra": item.boresight[0],
        "dec": item.boresight[1],
        "mjd_tai": item.mjd,
        "detectors": list(item.detectors),
    }


@contextmanager
def local_service(
    deployment: Deployment, night: SimulatedNight, config: PromptConfig | None = None
) -> Iterator[str]:
    """A prompt service for this night's calibrations and templates, on a free localhost port."""
    from dms.services.prompt.app import make_app
    from dms.services.vo.server import serve_in_thread

    payload = AlertProductionPayload([night.calib_run], [night.template_run])
    service = PromptService(deployment, payload, config)
    try:
        with serve_in_thread(make_app(service)) as base:
            yield base
    finally:
        service.close()


def feed_night(
    base_url: str,
    night: SimulatedNight,
    *,
    timeout: float = 600.0,
    echo: Callable[[str], None] | None = None,
) -> list[VisitReport]:
    """Send each visit's events to the service at `base_url` and wait for its outcome."""
    reports: list[VisitReport] = []
    visits = sorted(night.visits, key=lambda v: v.mjd)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        if visits:
            _post(client, "/next-visit", next_visit_event(night, visits[0].visit))
        for k, item in enumerate(visits):
            _post(client, "/visit-ready", {"visit": item.visit})
            if k + 1 < len(visits):  # the next pointing is announced while this visit is processed
                _post(client, "/next-visit", next_visit_event(night, visits[k + 1].visit))
            status = _wait(client, item.visit, timeout)
            report = VisitReport(
                item.visit,
                status["state"],
                status["error"],
                int(status["n_dia_sources"] or 0),
                int(status["n_alerts"] or 0),
                float(status["timings"].get("total", float("nan"))),
                dict(status["timings"]),
            )
            reports.append(report)
            if echo is not None:
                echo(
                    f"  visit {report.visit}: {report.state}, {report.n_dia_sources} DiaSources, "
                    f"{report.n_alerts} alerts in {report.seconds:.1f} s"
                    + (f" ({report.error})" if report.error else "")
                )
    return reports


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    if response.status_code >= 400:
        raise PromptError(f"POST {path}: {response.status_code} {response.json().get('error')}")
    result: dict[str, Any] = response.json()
    return result


def _wait(client: httpx.Client, visit: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/visits/{visit}").json()
        if status["state"] not in ("expected", "processing"):
            return status
        if time.monotonic() > deadline:
            raise PromptError(f"visit {visit} not processed within {timeout:g} s")
        time.sleep(0.1)


def process_night(
    deployment: Deployment,
    night: SimulatedNight,
    *,
    workers: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[VisitReport]:
    """A simulated night through a local prompt service, summarised (`dms night simulate --process`)."""
    import numpy as np

    say = echo or (lambda _text: None)
    config = PromptConfig(workers=workers)
    with local_service(deployment, night, config) as base:
        say(f"Prompt processing at {base}: next-visit and visit-ready events for {len(night.visits)} visits")
        reports = feed_night(base, night, echo=echo)
    seconds = [r.seconds for r in reports if r.state == "done"]
    if seconds:
        say(
            f"  {len(seconds)}/{len(reports)} visits done; readout to alerts stored: p50 "
            f"{np.percentile(seconds, 50):.1f} s, max {max(seconds):.1f} s; "
            f"{sum(r.n_dia_sources for r in reports)} DiaSources, {sum(r.n_alerts for r in reports)} alerts"
        )
    return reports
