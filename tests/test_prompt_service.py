"""The Prompt Processing service over real HTTP, real PostgreSQL and real worker processes, with a small
real detector payload (tests/prompt_support.py): events in, DiaSources in the APDB, alerts in the archive,
difference images in the Data Backbone, timings and QC metrics in the database; and bad input."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prompt_support import INSTRUMENT, SepPayload, count, make_field, observe, reset
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


def _match(
    found_ra: np.ndarray, found_dec: np.ndarray, ra: np.ndarray, dec: np.ndarray, arcsec: float
) -> np.ndarray:
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
    assert (
        packet["diaSource"]["visit"] == visit
        and packet["diaObject"]["diaObjectId"] == packet["diaSource"]["diaObjectId"]
    )
    for kind in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
        assert packet[kind] is not None and packet[kind][:6] == b"SIMPLE"
    for detector in field.detectors:
        hdus = backbone.get(DIFFERENCE, {"instrument": INSTRUMENT, "visit": visit, "detector": detector})
        assert hdus["IMAGE"].data.shape == (256, 256) and hdus[0].header["VISIT"] == visit
    metrics = {
        r[0]
        for r in _rows(
            prompt_deployment, "SELECT DISTINCT metric FROM dms.qc_measurement WHERE visit = %s", (visit,)
        )
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
    current = count(
        prompt_deployment, 'SELECT count(*) FROM apdb."DiaObject" WHERE "validityEndMjdTai" IS NULL'
    )
    assert current <= max(n_first, n_second) + 2  # the second visit's sources joined the first's objects
    twice = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaObjectLast" WHERE "nDiaSources" = 2')
    assert twice >= 0.9 * min(n_first, n_second)
    forced = count(
        prompt_deployment, 'SELECT count(*) FROM apdb."DiaForcedSource" WHERE visit = %s', (second,)
    )
    assert forced == n_first  # every DiaObject known before the second visit lies on its detectors
    history = deserialize(read_packet(backbone, int(find_alerts(backbone, visit=second).alert_id.iloc[0])))
    assert history["prvDiaSources"] and history["prvDiaSources"][0]["visit"] == first


def _rows(deployment: Deployment, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg
    from prompt_support import conninfo

    with psycopg.connect(conninfo(deployment)) as conn:
        return conn.execute(query, params).fetchall()


def _sources(deployment: Deployment, visit: int) -> np.ndarray:
    return np.array(
        _rows(deployment, 'SELECT ra, dec FROM apdb."DiaSource" WHERE visit = %s', (visit,)), float
    )


def test_malformed_events_are_refused_with_a_message(base_url: str, backbone: Backbone) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        cases = [
            ("/next-visit", b"{not json", 400, "not JSON"),
            ("/next-visit", b"[1, 2]", 400, "JSON object"),
            (
                "/next-visit",
                b'{"visit": 1, "band": "q", "ra": 1, "dec": 1, "mjd_tai": 61000, "detectors": [0]}',
                400,
                "band",
            ),
            (
                "/next-visit",
                b'{"visit": 1, "band": "r", "ra": 400, "dec": 1, "mjd_tai": 61000, "detectors": [0]}',
                400,
                "ra",
            ),
            (
                "/next-visit",
                b'{"visit": 1, "band": "r", "ra": 1, "dec": 1, "mjd_tai": 61000, "detectors": [0, 0]}',
                400,
                "twice",
            ),
            (
                "/next-visit",
                b'{"visit": 1, "band": "r", "ra": 1, "dec": 1, "detectors": [0]}',
                400,
                "mjd_tai",
            ),
            ("/next-visit", b'{"visit": 1, "sql": "DROP TABLE dms.alert", "detectors": [0]}', 400, "sql"),
            ("/next-visit", b'{"visit": 1, "detectors": [' + b"1," * 40000 + b"1]}", 400, "exceeds"),
            ("/visit-ready", b'{"visit": "1; DROP TABLE dms.alert"}', 400, "integer"),
            ("/visit-ready", b'{"visit": 987654321}', 404, "no next-visit"),
        ]
        for path, body, status, words in cases:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == status, (path, body[:60], response.text)
            assert words in response.json()["error"], (body[:60], response.json())
        assert client.get("/visits/abc").status_code == 400
        assert client.get("/visits/987654321").status_code == 404
    assert count(backbone.deployment, "SELECT count(*) FROM dms.prompt_visit") == 0


def test_bad_detector_inputs_are_recorded_and_the_rest_of_the_visit_goes_on(
    service: PromptService, backbone: Backbone, prompt_deployment: Deployment
) -> None:
    """Detector 5 has no template, detector 6 a corrupt raw; in another field every bias is missing."""
    field = make_field(backbone, 152.0, 2.0, (0, 1, 6), seed=3)
    visit = next(VISITS)
    observe(backbone, field, visit, detectors=(0, 1))
    corrupt = prompt_deployment.data_dir / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)  # a truncated header
    backbone.put(
        corrupt,
        "prompt_test_science",
        {"instrument": INSTRUMENT, "visit": visit, "detector": 6},
        run="prompt/test",
    )
    service.next_visit(field.event(visit, MJD, detectors=(0, 1, 5, 6)))
    service.visit_ready(visit)
    outcome = service.wait(visit)
    record = service.status(visit)
    assert outcome.state == record.state == "done"
    assert "no template" in record.detectors[5]["error"] and record.detectors[5]["state"] == "failed"
    assert "not a readable FITS" in record.detectors[6]["error"]
    assert record.detectors[0]["state"] == record.detectors[1]["state"] == "done"
    assert "detector 5" in (record.error or "") and "detector 6" in (record.error or "")
    stored = {
        r[0]
        for r in _rows(
            prompt_deployment, 'SELECT DISTINCT detector FROM apdb."DiaSource" WHERE visit = %s', (visit,)
        )
    }
    assert stored == {0, 1}

    no_bias = make_field(backbone, 153.0, 2.0, (0,), seed=4, bias=False)
    other = next(VISITS)
    observe(backbone, no_bias, other)
    service.next_visit(no_bias.event(other, MJD))
    service.visit_ready(other)
    service.wait(other)
    record = service.status(other)
    assert "no calibration (bias)" in record.detectors[0]["error"]
    assert record.n_dia_sources == 0
    assert count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (other,)) == 0


def test_calibration_frames_become_qc_metrics_that_raise_alarms(
    service: PromptService, backbone: Backbone, prompt_deployment: Deployment
) -> None:
    import psycopg
    from prompt_support import conninfo

    from dms.loaders.qc import api
    from dms.services.archiver.ingest import RAW, RAW_DIMENSIONS, raw_run
    from dms.services.prompt import qc
    from dms.services.prompt.calibration import frame_bytes
    from dms.services.prompt.visits import NextVisit

    visit = next(VISITS)
    rng = np.random.default_rng(11)
    frames = {}
    for detector, hot in ((0, 3), (1, 40)):
        image = rng.normal(1000.0, 8.0, (200, 200))
        where = rng.choice(image.size, hot, replace=False)
        image.flat[where] = 5000.0
        frames[detector] = image
        path = prompt_deployment.data_dir / f"bias_{detector}.fits"
        path.write_bytes(frame_bytes(image.astype(np.float32), {"IMGTYPE": "BIAS"}))
        data_id = {"instrument": INSTRUMENT, "exposure": visit, "detector": detector}
        backbone.put(path, RAW, data_id, run=raw_run(INSTRUMENT), dimensions=RAW_DIMENSIONS)
    with psycopg.connect(conninfo(prompt_deployment), autocommit=True) as conn:
        qc.ensure_metric(conn, "calib_bias_hot_pixels")
        if not any(t["name"] == "bias-hot-pixels" for t in api.list_thresholds(conn)):
            api.add_threshold(conn, "bias-hot-pixels", "calib_bias_hot_pixels", "<=", 10, "", "minimum")
    service.next_visit(NextVisit(visit=visit, instrument=INSTRUMENT, mode="calibration", detectors=(0, 1)))
    service.visit_ready(visit)
    assert service.wait(visit).state == "done"
    rows = _rows(
        prompt_deployment,
        "SELECT metric, (data_id->>'detector')::int, value FROM dms.qc_measurement WHERE visit = %s",
        (visit,),
    )
    values = {(m, d): v for m, d, v in rows}
    for detector, hot in ((0, 3), (1, 40)):
        clean = np.delete(frames[detector].ravel(), np.flatnonzero(frames[detector].ravel() == 5000.0))
        assert values["calib_bias_hot_pixels", detector] == hot
        assert values["calib_bias_mean_adu", detector] == pytest.approx(clean.mean(), abs=0.1)
        assert values["calib_bias_std_adu", detector] == pytest.approx(clean.std(), rel=0.03)
    with psycopg.connect(conninfo(prompt_deployment), autocommit=True) as conn:
        alarms = [a for a in api.list_alarms(conn, active=True) if a["threshold"] == "bias-hot-pixels"]
    assert len(alarms) == 1 and alarms[0]["data_id"].get("detector") == 1


def test_a_visit_on_a_dask_cluster(backbone: Backbone, prompt_deployment: Deployment) -> None:
    """The same visit processing with the detectors on a Dask LocalCluster (the scale-out configuration)."""
    from dms.services.prompt.payloads import DaskPool

    field = make_field(backbone, 154.0, 2.0, (0, 1), seed=8)
    visit = next(VISITS)
    truth = observe(backbone, field, visit)
    service = PromptService(prompt_deployment, SepPayload(), pool=DaskPool(workers=2))
    try:
        service.next_visit(field.event(visit, MJD))
        service.visit_ready(visit)
        outcome = service.wait(visit)
        record = service.status(visit)
    finally:
        service.close()
    assert outcome.state == "done", outcome.error
    assert {d["worker"] for d in record.detectors.values()} and all(
        d["state"] == "done" for d in record.detectors.values()
    )
    sources = _sources(prompt_deployment, visit)
    recovered = _match(sources[:, 0], sources[:, 1], truth.ra.to_numpy(), truth.dec.to_numpy(), 0.5)
    assert recovered.mean() >= 0.9
    assert len(find_alerts(backbone, visit=visit)) == len(sources)
