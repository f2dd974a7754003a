"""A simulated night end to end with the Alert Production payload: raws archived by the simulator, the
prompt service fed next-visit / visit-ready events over HTTP, DiaSources in the APDB and alerts in the
archive, checked against the simulator's truth; and an unknown detector recorded as such."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from prompt_support import count, reset
from scipy.spatial import cKDTree

from dms.deployment import Deployment
from dms.services.alerts.archive import find_alerts, read_packet
from dms.services.alerts.packets import deserialize, latest_schema
from dms.services.backbone import Backbone
from dms.services.prompt.night import feed_night, local_service, next_visit_event
from dms.services.prompt.simulate import simulate_night
from dms.services.prompt.simulate.night import SimulatedNight

pytest_plugins = ["prompt_support"]


@pytest.fixture(scope="module")
def night(prompt_deployment: Deployment) -> Iterator[SimulatedNight]:
    reset(prompt_deployment)
    yield simulate_night(prompt_deployment, 2, 2, size=(384, 384), seed=21)


def test_a_simulated_night_through_the_service(prompt_deployment: Deployment, night: SimulatedNight) -> None:
    import fastavro

    with local_service(prompt_deployment, night) as base:
        reports = feed_night(base, night)
    assert [r.state for r in reports] == ["done", "done"], [r.error for r in reports]
    backbone = Backbone(prompt_deployment)
    truth = night.truth[(night.truth.kind == "transient") & (night.truth.visit != 0)]
    for report in reports:
        visit = report.visit
        n = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (visit,))
        alerts = find_alerts(backbone, visit=visit)
        assert n == report.n_dia_sources == len(alerts) == alerts.alert_id.nunique()
        for step in (
            "payload",
            "association",
            "apdb_store",
            "alerts",
            "payload.psf_match",
            "payload.isr.calibrate",
        ):
            assert step in report.timings
        found = np.array(
            _rows(prompt_deployment, 'SELECT ra, dec FROM apdb."DiaSource" WHERE visit = %s', (visit,)), float
        )
        injected = truth[truth.visit == visit]
        scale = np.cos(np.radians(night.field_center[1]))
        distance, _ = cKDTree(np.column_stack([found[:, 0] * scale, found[:, 1]])).query(
            np.column_stack([injected.ra * scale, injected.dec])
        )
        assert (distance * 3600 < 1.0).mean() >= 0.8, distance * 3600  # bright injected transients
        packet = deserialize(read_packet(backbone, int(alerts.alert_id.iloc[0])))
        assert fastavro.validation.validate(packet, latest_schema().parsed, raise_errors=True)
        assert packet["cutoutDifference"] is not None and packet["cutoutScience"] is not None
    # the field's DiaObjects known before the second visit were measured on it
    second = reports[1].visit
    assert (
        count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaForcedSource" WHERE visit = %s', (second,))
        > 0
    )


def test_an_unknown_detector_is_an_error_for_that_detector(
    prompt_deployment: Deployment, night: SimulatedNight
) -> None:
    import httpx

    event = next_visit_event(night, night.visits[0].visit)
    event["visit"] = night.visits[0].visit + 50  # a visit of its own
    event["detectors"] = [999]
    with local_service(prompt_deployment, night) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert client.post("/next-visit", json=event).status_code == 201
        assert client.post("/visit-ready", json={"visit": event["visit"]}).status_code == 202
        import time

        for _ in range(600):
            status = client.get(f"/visits/{event['visit']}").json()
            if status["state"] not in ("expected", "processing"):
                break
            time.sleep(0.1)
    assert status["state"] == "done" and status["n_dia_sources"] == 0
    assert "999" in status["detectors"]["999"]["error"] and status["detectors"]["999"]["state"] == "failed"


def _rows(deployment: Deployment, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    import psycopg
    from prompt_support import conninfo

    with psycopg.connect(conninfo(deployment)) as conn:
        return conn.execute(query, params).fetchall()


def test_a_killed_service_leaves_the_visit_for_offline_processing(prompt_deployment: Deployment) -> None:
    """`dms prompt serve` killed (SIGKILL) while it processes a visit: the visit stays 'processing', offline
    processing marks it late and redoes it; every DiaSource and alert exists once."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from dms.services.prompt.ap_payload import AlertProductionPayload
    from dms.services.prompt.calibration import CalibrationPayload
    from dms.services.prompt.offline import run_offline
    from dms.services.prompt.payloads import LocalPool
    from dms.services.prompt.pipeline import VisitProcessor
    from dms.services.prompt.visits import VisitStore

    night = simulate_night(prompt_deployment, 1, 2, size=(384, 384), seed=22)  # a visit never processed
    visit = night.visits[0].visit
    store = VisitStore(prompt_deployment)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dms = shutil.which("dms", path=str(Path(sys.executable).parent))
    assert dms
    command = [dms, "--data-dir", str(prompt_deployment.data_dir), "prompt", "serve", "--port", str(port)]
    command += [
        "--workers",
        "1",
        "--calib-collection",
        night.calib_run,
        "--template-collection",
        night.template_run,
    ]
    server = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.post("/next-visit", json=next_visit_event(night, visit)).status_code == 201
            assert client.post("/visit-ready", json={"visit": visit}).status_code == 202
        while store.get(visit).detectors[night.detectors[0]]["state"] != "processing":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the service and its worker processes, mid-visit
        server.wait(timeout=30)
    assert store.get(visit).state == "processing"
    assert count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (visit,)) == 0

    pool = LocalPool(1)
    payload = AlertProductionPayload([night.calib_run], [night.template_run])
    processor = VisitProcessor(
        prompt_deployment, {"science": payload, "calibration": CalibrationPayload()}, pool
    )
    try:
        time.sleep(1.1)
        report = run_offline(prompt_deployment, processor, window_seconds=1)
    finally:
        processor.close()
        pool.close()
    assert visit in report.marked_late and [o.state for o in report.outcomes if o.visit == visit] == ["done"]
    n = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (visit,))
    distinct = count(
        prompt_deployment,
        'SELECT count(DISTINCT "diaSourceId") FROM apdb."DiaSource" WHERE visit = %s',
        (visit,),
    )
    alerts = count(
        prompt_deployment, "SELECT count(DISTINCT alert_id) FROM dms.alert WHERE visit = %s", (visit,)
    )
    assert n == distinct == alerts == store.get(visit).n_dia_sources > 0
