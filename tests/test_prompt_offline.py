"""Offline processing redoes what prompt processing did not finish, with no duplicate DiaSources or alerts:
a worker process killed mid-visit, a failure between the APDB store and the alerts, a visit past its window,
and (daily pass) an exposure the service was never told about. Real PostgreSQL, real worker processes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from prompt_support import SepPayload, count, make_field, observe, reset

from dms.deployment import Deployment
from dms.services.backbone import Backbone
from dms.services.prompt.calibration import CalibrationPayload
from dms.services.prompt.offline import run_offline
from dms.services.prompt.payloads import LocalPool
from dms.services.prompt.pipeline import VisitProcessor
from dms.services.prompt.service import PromptService
from dms.services.prompt.visits import NextVisit, VisitStore

pytest_plugins = ["prompt_support"]

VISITS = itertools.count(3000)
MJD = 61001.1


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalPool]:
    workers = LocalPool(2)
    workers.warm(("prompt_support",))
    yield workers
    workers.close()


@pytest.fixture()
def backbone(prompt_deployment: Deployment) -> Backbone:
    reset(prompt_deployment)
    return Backbone(prompt_deployment)


def _offline(
    deployment: Deployment, pool: LocalPool, processor_class: type[VisitProcessor] = VisitProcessor
) -> VisitProcessor:
    return processor_class(deployment, {"science": SepPayload(), "calibration": CalibrationPayload()}, pool)


def _counts(deployment: Deployment, visit: int) -> tuple[int, int, int, int]:
    """DiaSources, distinct DiaSource ids, alerts and distinct alert ids of a visit."""
    return (
        count(deployment, 'SELECT count(*) FROM apdb."DiaSource" WHERE visit = %s', (visit,)),
        count(
            deployment,
            'SELECT count(DISTINCT "diaSourceId") FROM apdb."DiaSource" WHERE visit = %s',
            (visit,),
        ),
        count(deployment, "SELECT count(*) FROM dms.alert WHERE visit = %s", (visit,)),
        count(deployment, "SELECT count(DISTINCT alert_id) FROM dms.alert WHERE visit = %s", (visit,)),
    )


def test_a_killed_worker_fails_the_visit_and_offline_redoes_it(
    prompt_deployment: Deployment, backbone: Backbone, pool: LocalPool
) -> None:
    field = make_field(backbone, 160.0, -5.0, (0, 1, 2), seed=3)
    visit = next(VISITS)
    truth = observe(backbone, field, visit)
    service = PromptService(prompt_deployment, SepPayload(crash_detectors=(1,)), pool=LocalPool(2))
    try:
        service.next_visit(field.event(visit, MJD))
        service.visit_ready(visit)
        outcome = service.wait(visit)
    finally:
        service.close()
    record = VisitStore(prompt_deployment).get(visit)
    assert outcome.state == record.state == "failed"
    assert "detector 1" in (record.error or "") and "died" in (record.error or "")
    assert record.detectors[1]["state"] == "failed"
    assert _counts(prompt_deployment, visit) == (0, 0, 0, 0)  # nothing half-stored

    processor = _offline(prompt_deployment, pool)
    try:
        report = run_offline(prompt_deployment, processor)
        again = run_offline(prompt_deployment, processor)  # a second pass finds nothing to do
    finally:
        processor.close()
    assert [o.visit for o in report.outcomes] == [visit] and report.outcomes[0].state == "done"
    assert again.outcomes == []
    record = VisitStore(prompt_deployment).get(visit)
    assert record.state == "done" and record.attempts == 2 and record.processed_by == "offline"
    n, distinct, alerts, distinct_alerts = _counts(prompt_deployment, visit)
    assert n == distinct == alerts == distinct_alerts == record.n_dia_sources
    assert n >= 0.9 * len(truth)


class _FailAfterFirstArchive(VisitProcessor):
    """A processor whose alert archiving fails after the first detector (the APDB store has committed)."""

    def _archive(self, event: NextVisit, detector: int, batch: pd.DataFrame, packets: list[bytes]) -> None:
        if self._archived_detectors(event.visit):
            raise ConnectionError("the archive went away")
        super()._archive(event, detector, batch, packets)


def test_a_failure_after_the_store_is_redone_with_only_the_missing_alerts(
    prompt_deployment: Deployment, backbone: Backbone, pool: LocalPool
) -> None:
    field = make_field(backbone, 161.0, -5.0, (0, 1, 2), seed=4)
    visit = next(VISITS)
    observe(backbone, field, visit)
    store = VisitStore(prompt_deployment)
    store.record_next_visit(field.event(visit, MJD))
    store.mark_ready(visit)
    failing = _offline(prompt_deployment, pool, _FailAfterFirstArchive)
    try:
        outcome = failing.process(store.claim(visit, ["expected"], "prompt"))
    finally:
        failing.close()
    assert outcome.state == "failed" and "archive went away" in (outcome.error or "")
    n, distinct, alerts, _ = _counts(prompt_deployment, visit)
    assert n == distinct > 0 and 0 < alerts < n  # stored whole; one detector's alerts archived
    objects_before = count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaObject"')

    processor = _offline(prompt_deployment, pool)
    try:
        report = run_offline(prompt_deployment, processor)
    finally:
        processor.close()
    assert report.outcomes[0].state == "done" and report.outcomes[0].redone_from_store
    after = _counts(prompt_deployment, visit)
    assert after == (n, n, n, n)  # every DiaSource once, and now every alert, once
    assert (
        count(prompt_deployment, 'SELECT count(*) FROM apdb."DiaObject"') == objects_before
    )  # no new versions


def test_a_visit_past_its_window_is_marked_late_and_redone(
    prompt_deployment: Deployment, backbone: Backbone, pool: LocalPool
) -> None:
    """The service claimed the visit and then stopped (killed): the visit stays 'processing' until the
    window passes, then offline processing marks it late and redoes it."""
    field = make_field(backbone, 162.0, -5.0, (0, 1), seed=5)
    visit = next(VISITS)
    observe(backbone, field, visit)
    store = VisitStore(prompt_deployment)
    store.record_next_visit(field.event(visit, MJD))
    store.mark_ready(visit)
    store.claim(visit, ["expected"], "prompt")  # ... and the service dies here
    processor = _offline(prompt_deployment, pool)
    try:
        early = run_offline(prompt_deployment, processor, window_seconds=60)
        assert early.marked_late == [] and early.outcomes == []  # still within its window
        time.sleep(1.2)
        report = run_offline(prompt_deployment, processor, window_seconds=1)
    finally:
        processor.close()
    assert report.marked_late == [visit] and [o.state for o in report.outcomes] == ["done"]
    n, distinct, alerts, distinct_alerts = _counts(prompt_deployment, visit)
    assert n == distinct == alerts == distinct_alerts > 0


def test_an_old_failure_waits_for_the_daily_pass(
    prompt_deployment: Deployment, backbone: Backbone, pool: LocalPool
) -> None:
    field = make_field(backbone, 163.0, -5.0, (0,), seed=6)
    visit = next(VISITS)
    observe(backbone, field, visit)
    store = VisitStore(prompt_deployment)
    store.record_next_visit(field.event(visit, MJD))
    store.mark_ready(visit)
    store.claim(visit, ["expected"], "prompt")
    store.finish(visit, "failed", error="the database was down")
    processor = _offline(prompt_deployment, pool)
    try:
        recent = run_offline(prompt_deployment, processor, within_hours=0)  # outside a 0-hour window
        daily = run_offline(prompt_deployment, processor, within_hours=0, daily=True)
    finally:
        processor.close()
    assert recent.outcomes == []
    assert [o.visit for o in daily.outcomes] == [visit] and daily.outcomes[0].state == "done"
