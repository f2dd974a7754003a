"""Offline processing (`dms offline run`): redo what prompt processing did not finish, without duplicates.

The regular pass marks late every visit still unfinished `window_seconds` after its readout, then redoes the
visits that failed, were cancelled or are late, whose readout ended within `within_hours` (24 h by default:
the Alert Production requirement for alerts missed in real time). The daily pass (`--daily`) also redoes
such visits whatever their age, and processes the science exposures whose raws were archived but that the
service was never told about (no next-visit event: the service was down), from the exposure records.

A redo claims the visit as the prompt service would (so two passes cannot both take it) and runs the same
pipeline, which finds what was already stored: a visit whose APDB store committed gets only its missing
alerts; a visit stored nowhere is processed whole. Nothing is stored twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from astropy.time import Time
from tqdm import tqdm

from dms.deployment import Deployment
from dms.services.prompt.errors import VisitStateError
from dms.services.prompt.pipeline import VisitOutcome, VisitProcessor
from dms.services.prompt.visits import OFFLINE_CLAIMABLE, NextVisit, VisitStore

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_WITHIN_HOURS = 24.0
DAILY_HOURS = 24.0 * 365 * 20


@dataclass
class OfflineReport:
    marked_late: list[int] = field(default_factory=list)
    announced: list[int] = field(default_factory=list)  # exposures found without a next-visit event
    outcomes: list[VisitOutcome] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # claimed meanwhile by someone else


def unannounced_exposures(deployment: Deployment) -> list[NextVisit]:
    """Science exposures with archived raws and no prompt_visit row, as next-visit events."""
    query = sa.text(
        "SELECT e.instrument, e.id, f.band, e.tracking_ra, e.tracking_dec, e.timespan_begin, e.timespan_end, "
        "array_agg(DISTINCT (d.data_id->>'detector')::int) AS detectors "
        "FROM dms.exposure e JOIN dms.physical_filter f "
        "ON f.instrument = e.instrument AND f.name = e.physical_filter "
        "JOIN dms.dataset d ON d.dataset_type = 'raw' AND d.data_id->>'instrument' = e.instrument "
        "AND (d.data_id->>'exposure')::bigint = e.id "
        "WHERE e.observation_type IN ('science', 'object') AND e.tracking_ra IS NOT NULL "
        "AND f.band IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM dms.prompt_visit p WHERE p.visit = e.id) "
        "GROUP BY e.instrument, e.id, f.band, e.tracking_ra, e.tracking_dec, e.timespan_begin, "
        "e.timespan_end "
        "ORDER BY e.timespan_begin"
    )
    with deployment.engine().connect() as conn:
        rows = conn.execute(query).all()
    events = []
    for instrument, exposure, band, ra, dec, begin, end, detectors in rows:
        middle = Time(begin, scale="tai") + (Time(end, scale="tai") - Time(begin, scale="tai")) / 2
        events.append(
            NextVisit(
                visit=int(exposure),
                instrument=instrument,
                band=band,
                ra=float(ra) % 360.0,
                dec=float(dec),
                mjd_tai=float(middle.tai.mjd),
                detectors=tuple(sorted(int(d) for d in detectors)),
            )
        )
    return events


def run_offline(
    deployment: Deployment,
    processor: VisitProcessor,
    *,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    within_hours: float = DEFAULT_WITHIN_HOURS,
    daily: bool = False,
    echo: Callable[[str], None] | None = None,
) -> OfflineReport:
    """One pass of offline processing (see the module's docstring)."""
    store = VisitStore(deployment)
    report = OfflineReport()
    report.marked_late = store.mark_late(window_seconds)
    if daily:
        for event in unannounced_exposures(deployment):
            store.record_next_visit(event)
            store.mark_ready(event.visit)
            report.announced.append(event.visit)
    todo = store.to_redo(DAILY_HOURS if daily else within_hours)
    todo += [v for v in report.announced if v not in todo]
    for visit in tqdm(todo, desc="offline", unit="visit", disable=echo is None or not todo):
        try:
            event = store.claim(visit, OFFLINE_CLAIMABLE, "offline")
        except VisitStateError as exc:
            report.skipped[visit] = str(exc)
            continue
        outcome = processor.process(event)
        report.outcomes.append(outcome)
        if echo is not None:
            echo(
                f"  visit {visit}: {outcome.state}, {outcome.n_dia_sources} DiaSources, "
                f"{outcome.n_alerts} alerts"
                + (" (stored before; missing alerts sent)" if outcome.redone_from_store else "")
                + (f" ({outcome.error})" if outcome.error else "")
            )
    return report
