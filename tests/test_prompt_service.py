"""The Prompt Processing service over real HTTP, real PostgreSQL and real worker processes, with a small
real detector payload (tests/prompt_support.py): events in, DiaSources in the APDB, alerts in the archive,
difference images in the Data Backbone, timings and QC metrics in the database; and bad input."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from scipy.spatial import cKDTree

from dms.deployment import Deployment
from dms.services.alerts.archive import find_alerts, read_packet
from dms.services.alerts.packets import deserialize
from dms.services.backbone import Backbone
from dms.services.prompt.app import make_app
from dms.services.prompt.payloads import LocalPool
from dms.services.prompt.pipeline import DIFFERENCE
from dms.services.prompt.service import PromptService
from dms.services.vo.server import serve_in_thread
from prompt_support import INSTRUMENT, SepPayload, count, make_field, observe, reset

pytest_plugins = ["prompt_support"]

VISITS = itertools.count(1000)
MJD = 61000.1


@pytest.fixture(scope="module")
def service(prompt_deployment: Deployment) -> Iterator[PromptService]:
    svc = PromptService(prompt_deployment, SepPayload(), pool=LocalPool(2))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def base_url(service: PromptService) -> Iterator[str]:
    with serve_in_thread(make_app(service)) as url:
        yield url


@pytest.fixture()
def backbone(prompt_deployment: Deployment) -> Backbone:
    reset(prompt_deployment)
    return Backbone(prompt_deployment)


def _match(found_ra: np.ndarray, found_dec: np.ndarray, ra: np.ndarray, dec: np.ndarray, arcsec: float) -> np.ndarray:
    """For each truth position, whether a found position lies within `arcsec` (flat-sky KD-tree)."""
    scale = np.cos(np.radians(np.mean(dec)))
    tree = cKDTree(np.column_stack([found_ra * scale, found_dec]))
    distance, _ = tree.query(np.column_stack([ra * scale, dec]))
    return distance * 3600 < arcsec


def test_a_visit_end_to_end_over_http(
    service: PromptService, base_url: str, backbone: Backbone, prompt_deployment: Deployment
) -> None:
    field = make_field(backbone, 150.0, 2.0, (0, 1, 2), seed=1)
    visit = next(VISITS)
    truth = observe(backbone, field, visit)
    event = field.event(visit, MJD).model_dump(mode="json")
    with httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.post("/next-visit", json=event).status_code == 201
        again = client.post("/next-visit", json=event)
        assert again.status_code == 201 and again.json()["created"] is False
        ready = client.post("/visit-ready", json={"visit": visit})
        assert ready.status_code == 202, ready.text
        assert client.post("/visit-ready", json={"visit": visit}).status_code == 409  # processed once
        outcome = service.wait(visit)
        status = client.get(f"/visits/{visit}").json()
    assert outcome.state == "done" and status["state"] == "done", status
    assert status["attempts"] == 1 and status["error"] is None
    for step in ("payload", "association", "aggregates", "apdb_store", "alerts", "qc", "total"):
        assert status["timings"][step] >= 0, step
    assert set(status["detectors"]) == {"0", "1", "2"}
    assert all(d["state"] == "done" and d["worker"] for d in status["detectors"].values())

    n = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (visit,))
    assert n == status["n_dia_sources"] == outcome.n_dia_sources
    sources = _sources(prompt_deployment, visit)
    recovered = _match(sources[:, 0], sources[:, 1], truth.ra.to_numpy(), truth.dec.to_numpy(), 0.5)
    assert recovered.mean() >= 0.9  # transients of S/N 40-100
    assert n <= len(truth) * 1.2  # few spurious detections on a same-seeing subtraction
    # every DiaSource started a DiaObject (an empty APDB), one alert each, archived with its packet
    assert count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaObject"') == n
    alerts = find_alerts(backbone, visit=visit)
    assert len(alerts) == n == status["n_alerts"]
    packet = deserialize(read_packet(backbone, int(alerts.alert_id.iloc[0])))
    assert packet["diaSource"]["visit"] == visit and packet["diaObject"]["diaObjectId"] == packet["diaSource"]["diaObjectId"]
    for kind in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        assert packet[kind] is not None and packet[kind][:6] == b"SIMPLE"
    for detector in field.detectors:
        hdus = backbone.get(DIFFERENCE, {"instrument": INSTRUMENT, "visit": visit, "detector": detector})
        assert hdus["IMAGE"].data.shape == (256, 256) and hdus[0].header["VISIT"] == visit
    metrics = {
        r[0]
        for r in _rows(prompt_deployment, "SELECT DISTINCT metric FROM dms.qc_measurement WHERE visit = %s", (visit,))
    }
    assert {"prompt_psf_fwhm_arcsec", "prompt_n_dia_sources", "prompt_step_seconds"} <= metrics


def test_second_visit_associates_and_forces_photometry(
    service: PromptService, backbone: Backbone, prompt_deployment: Deployment
) -> None:
    """A second visit of the same field with the same transients: every source joins its DiaObject, and the
    known DiaObjects are measured in forced photometry."""
    field = make_field(backbone, 151.0, 2.0, (0, 1), seed=2)
    first, second = next(VISITS), next(VISITS)
    observe(backbone, field, first, seed=7)
    observe(backbone, field, second, seed=7)  # the same transients again
    for visit, mjd in ((first, MJD), (second, MJD + 0.02)):
        service.next_visit(field.event(visit, mjd))
        service.visit_ready(visit)
        assert service.wait(visit).state == "done"
    n_first = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (first,))
    n_second = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (second,))
    current = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaObject" WHERE "validityEndMjdTai" IS NULL')
    assert current <= max(n_first, n_second) + 2  # the second visit's sources joined the first's objects
    twice = count(
        prompt_deployment, 'SELECT count(*) FROM apdb."DiaObjectLast" WHERE "nDiaSources" = 2'
    )
    assert twice >= 0.9 * min(n_first, n_second)
    forced = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaForcedSource" WHERE visit = %s', (second,))
    assert forced == n_first  # every DiaObject known before the second visit lies on its detectors
    history = deserialize(read_packet(backbone, int(find_alerts(backbone, visit=second).alert_id.iloc[0])))
    assert history["prvDiaSources"] and history["prvDiaSources"][0]["visit"] == first


def _rows(deployment: Deployment, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg

    from prompt_support import conninfo

    with psycopg.connect(conninfo(deployment)) as conn:
        return conn.execute(query, params).fetchall()


def _sources(deployment: Deployment, visit: int) -> np.ndarray:
    return np.array(_rows(deployment, 'SELECT ra, dec FROM apdb."DiaSource" WHERE visit = %s', (visit,)), float)
