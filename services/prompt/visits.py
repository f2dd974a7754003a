"""The visits of the Prompt Processing service as the control database keeps them (dms.prompt_visit and
dms.prompt_detector_run).

A visit row is created by its next-visit event (a repeated event with the same content changes nothing; a
different one before processing updates it). A visit-ready event claims the visit in one UPDATE guarded by
its state, so two events (or an event and an offline redo) cannot both process it: the loser gets a
VisitStateError naming the state it found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dms.deployment import Deployment
from dms.services.prompt.errors import VisitEventError, VisitNotFoundError, VisitStateError

MAX_DETECTORS = 205  # LSSTCam's 189 science + 8 wavefront + 8 guider detectors
BANDS = ("u", "g", "r", "i", "z", "y")
MODES = ("science", "calibration")
#: States from which a visit-ready (or an offline redo) may start processing.
PROMPT_CLAIMABLE = ("expected",)
OFFLINE_CLAIMABLE = ("expected", "failed", "cancelled", "late")


class NextVisit(BaseModel):
    """A next-visit event: what the service prefetches for before the shutter closes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    visit: int = Field(ge=0, lt=2**62, description="Visit id (the exposure id of a one-snap visit).")
    instrument: str = Field(default="LSSTCamSim", min_length=1, max_length=32, description="Instrument.")
    mode: str = Field(
        default="science", description="science (Alert Production) or calibration (bias/flat QC)."
    )
    band: str | None = Field(default=None, description="Band (ugrizy); required in science mode.")
    ra: float | None = Field(default=None, ge=0, lt=360, description="Pointing right ascension, deg (ICRS).")
    dec: float | None = Field(default=None, ge=-90, le=90, description="Pointing declination, deg (ICRS).")
    mjd_tai: float | None = Field(default=None, gt=0, lt=100000, description="Mid-exposure time, MJD (TAI).")
    detectors: tuple[int, ...] = Field(
        min_length=1, max_length=MAX_DETECTORS, description="Detectors that will be read out."
    )
    expected_at: datetime | None = Field(default=None, description="When readout is expected to end (UTC).")

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        return value

    @field_validator("band")
    @classmethod
    def _band(cls, value: str | None) -> str | None:
        if value is not None and value not in BANDS:
            raise ValueError(f"band must be one of {', '.join(BANDS)}")
        return value

    @field_validator("detectors")
    @classmethod
    def _detectors(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a detector is listed twice")
        if any(d < 0 or d >= 1000 for d in value):
            raise ValueError("detector ids are in [0, 1000)")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _science_needs_pointing(self) -> NextVisit:
        if self.mode == "science":
            missing = [n for n in ("band", "ra", "dec", "mjd_tai") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"a science visit needs {', '.join(missing)}")
        return self


def parse_next_visit(payload: Any) -> NextVisit:
    """A NextVisit from a decoded JSON body, or a VisitEventError listing every problem."""
    if not isinstance(payload, Mapping):
        raise VisitEventError(
            "a next-visit event is a JSON object (visit, band, ra, dec, mjd_tai, detectors)"
        )
    try:
        return NextVisit.model_validate(dict(payload))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in exc.errors()
        )
        raise VisitEventError(f"next-visit event: {problems}") from None


@dataclass(frozen=True)
class VisitRecord:
    """A row of dms.prompt_visit with its detector runs."""

    visit: int
    state: str
    attempts: int
    error: str | None
    timings: dict[str, float]
    n_dia_sources: int | None
    n_alerts: int | None
    processed_by: str | None
    next_visit_at: datetime
    visit_ready_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    event: NextVisit
    detectors: dict[int, dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "visit": self.visit,
            "state": self.state,
            "attempts": self.attempts,
            "error": self.error,
            "processed_by": self.processed_by,
            "timings": self.timings,
            "n_dia_sources": self.n_dia_sources,
            "n_alerts": self.n_alerts,
            "next_visit_at": iso(self.next_visit_at),
            "visit_ready_at": iso(self.visit_ready_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "event": self.event.model_dump(mode="json"),
            "detectors": {
                str(d): {k: iso(v) if isinstance(v, datetime) else v for k, v in run.items()}
                for d, run in self.detectors.items()
            },
        }


class VisitStore:
    """Reads and writes the prompt service's visit rows."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def record_next_visit(self, event: NextVisit) -> bool:
        """Create the visit's row (True), or keep it (False) when the same event came before; a different
        event for a visit not yet processing replaces it; after that it is a VisitStateError."""
        values = {
            "visit": event.visit,
            "instrument": event.instrument,
            "mode": event.mode,
            "band": event.band,
            "ra": event.ra,
            "dec": event.dec,
            "mjd_tai": event.mjd_tai,
            "detectors": json.dumps(list(event.detectors)),
            "expected_at": event.expected_at,
        }
        with self.deployment.engine().begin() as conn:
            inserted = conn.execute(
                sa.text(
                    "INSERT INTO dms.prompt_visit (visit, instrument, mode, band, ra, dec, mjd_tai, "
                    "detectors, "
                    "state, expected_at) VALUES (:visit, :instrument, :mode, :band, :ra, :dec, :mjd_tai, "
                    "CAST(:detectors AS jsonb), 'expected', :expected_at) ON CONFLICT (visit) DO NOTHING "
                    "RETURNING visit"
                ),
                values,
            ).first()
            if inserted is None:
                current = self._event(conn, event.visit, lock=True)
                if current == event:
                    return False
                state = conn.execute(
                    sa.text("SELECT state FROM dms.prompt_visit WHERE visit = :v"), {"v": event.visit}
                ).scalar_one()
                if state != "expected":
                    raise VisitStateError(
                        f"visit {event.visit} is {state}: a different next-visit event cannot change it"
                    )
                conn.execute(
                    sa.text(
                        "UPDATE dms.prompt_visit SET instrument = :instrument, mode = :mode, band = :band, "
                        "ra = :ra, dec = :dec, mjd_tai = :mjd_tai, detectors = CAST(:detectors AS jsonb), "
                        "expected_at = :expected_at, next_visit_at = CURRENT_TIMESTAMP WHERE visit = :visit"
                    ),
                    values,
                )
                conn.execute(
                    sa.text("DELETE FROM dms.prompt_detector_run WHERE visit = :v"), {"v": event.visit}
                )
            conn.execute(
                sa.text(
                    "INSERT INTO dms.prompt_detector_run (visit, detector, state) "
                    "SELECT :v, d, 'expected' FROM unnest(CAST(:ds AS int[])) d ON CONFLICT DO NOTHING"
                ),
                {"v": event.visit, "ds": list(event.detectors)},
            )
        return inserted is not None

    def mark_ready(self, visit: int) -> None:
        """Record the end of readout (the first visit-ready event's time is kept)."""
        with self.deployment.engine().begin() as conn:
            found = conn.execute(
                sa.text(
                    "UPDATE dms.prompt_visit "
                    "SET visit_ready_at = coalesce(visit_ready_at, CURRENT_TIMESTAMP) "
                    "WHERE visit = :v RETURNING visit"
                ),
                {"v": visit},
            ).first()
        if found is None:
            raise VisitNotFoundError(f"visit {visit}: no next-visit event was received for it")

    def claim(self, visit: int, allowed: Sequence[str], by: str) -> NextVisit:
        """Move the visit to processing (one more attempt) if its state is in `allowed`; else a
        VisitStateError naming the state (so a repeated visit-ready is refused, not processed twice)."""
        with self.deployment.engine().begin() as conn:
            row = conn.execute(
                sa.text(
                    "UPDATE dms.prompt_visit SET state = 'processing', attempts = attempts + 1, "
                    "started_at = CURRENT_TIMESTAMP, ended_at = NULL, error = NULL, processed_by = :by "
                    "WHERE visit = :v AND state = ANY(:allowed) RETURNING visit"
                ),
                {"v": visit, "allowed": list(allowed), "by": by},
            ).first()
            if row is None:
                state = conn.execute(
                    sa.text("SELECT state FROM dms.prompt_visit WHERE visit = :v"), {"v": visit}
                ).scalar()
                if state is None:
                    raise VisitNotFoundError(f"visit {visit}: no next-visit event was received for it")
                raise VisitStateError(
                    f"visit {visit} is {state}; it is not processed again (a repeated visit-ready event?)"
                )
            return self._event(conn, visit)

    def finish(
        self,
        visit: int,
        state: str,
        *,
        error: str | None = None,
        timings: Mapping[str, float] | None = None,
        n_dia_sources: int | None = None,
        n_alerts: int | None = None,
    ) -> None:
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE dms.prompt_visit SET state = :state, error = :error, "
                    "ended_at = CURRENT_TIMESTAMP, "
                    "timings = CAST(:timings AS jsonb), n_dia_sources = :n, n_alerts = :a WHERE visit = :v"
                ),
                {
                    "v": visit,
                    "state": state,
                    "error": error,
                    "timings": json.dumps(dict(timings or {})),
                    "n": n_dia_sources,
                    "a": n_alerts,
                },
            )

    def detector_started(self, visit: int, detector: int) -> None:
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE dms.prompt_detector_run SET state = 'processing', attempts = attempts + 1, "
                    "started_at = CURRENT_TIMESTAMP, ended_at = NULL, error = NULL "
                    "WHERE visit = :v AND detector = :d"
                ),
                {"v": visit, "d": detector},
            )

    def detector_finished(
        self,
        visit: int,
        detector: int,
        state: str,
        *,
        error: str | None = None,
        timings: Mapping[str, float] | None = None,
        worker: str | None = None,
        n_dia_sources: int | None = None,
        n_forced_sources: int | None = None,
    ) -> None:
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE dms.prompt_detector_run SET state = :state, error = :error, "
                    "timings = CAST(:timings AS jsonb), worker = :worker, n_dia_sources = :n, "
                    "n_forced_sources = :f, ended_at = CURRENT_TIMESTAMP WHERE visit = :v AND detector = :d"
                ),
                {
                    "v": visit,
                    "d": detector,
                    "state": state,
                    "error": error,
                    "timings": json.dumps(dict(timings or {})),
                    "worker": worker,
                    "n": n_dia_sources,
                    "f": n_forced_sources,
                },
            )

    def get(self, visit: int) -> VisitRecord:
        with self.deployment.engine().connect() as conn:
            row = (
                conn.execute(sa.text("SELECT * FROM dms.prompt_visit WHERE visit = :v"), {"v": visit})
                .mappings()
                .first()
            )
            if row is None:
                raise VisitNotFoundError(f"visit {visit}: no next-visit event was received for it")
            runs = (
                conn.execute(
                    sa.text(
                        "SELECT detector, state, attempts, error, timings, worker, n_dia_sources, "
                        "n_forced_sources, started_at, ended_at FROM dms.prompt_detector_run "
                        "WHERE visit = :v "
                        "ORDER BY detector"
                    ),
                    {"v": visit},
                )
                .mappings()
                .all()
            )
        return VisitRecord(
            visit=int(row["visit"]),
            state=str(row["state"]),
            attempts=int(row["attempts"]),
            error=row["error"],
            timings=dict(row["timings"]),
            n_dia_sources=row["n_dia_sources"],
            n_alerts=row["n_alerts"],
            processed_by=row["processed_by"],
            next_visit_at=row["next_visit_at"],
            visit_ready_at=row["visit_ready_at"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            event=_event_of(row),
            detectors={int(r["detector"]): {k: v for k, v in r.items() if k != "detector"} for r in runs},
        )

    def mark_late(self, window_seconds: float) -> list[int]:
        """Visits whose readout ended more than `window_seconds` ago and are still processing or not
        started: marked late (offline processing redoes them)."""
        with self.deployment.engine().begin() as conn:
            rows = conn.execute(
                sa.text(
                    "UPDATE dms.prompt_visit SET state = 'late', error = coalesce(error, :why) "
                    "WHERE state IN ('expected', 'processing') AND visit_ready_at IS NOT NULL "
                    "AND visit_ready_at < CURRENT_TIMESTAMP - make_interval(secs => :w) RETURNING visit"
                ),
                {"w": float(window_seconds), "why": f"not done within {window_seconds:g} s of readout"},
            ).all()
        return sorted(int(r[0]) for r in rows)

    def to_redo(self, within_hours: float) -> list[int]:
        """Visits that failed, were cancelled or are late, whose readout ended within `within_hours`."""
        with self.deployment.engine().connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT visit FROM dms.prompt_visit WHERE state IN ('failed', 'cancelled', 'late') "
                    "AND coalesce(visit_ready_at, next_visit_at) >= "
                    "CURRENT_TIMESTAMP - make_interval(secs => :h * 3600) "
                    "ORDER BY mjd_tai NULLS LAST, visit"
                ),
                {"h": float(within_hours)},
            ).all()
        return [int(r[0]) for r in rows]

    def cancel(self, visit: int, why: str) -> None:
        with self.deployment.engine().begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE dms.prompt_visit SET state = 'cancelled', error = :why, "
                    "ended_at = CURRENT_TIMESTAMP "
                    "WHERE visit = :v AND state IN ('expected', 'processing')"
                ),
                {"v": visit, "why": why},
            )

    def _event(self, conn: sa.Connection, visit: int, lock: bool = False) -> NextVisit:
        row = (
            conn.execute(
                sa.text("SELECT * FROM dms.prompt_visit WHERE visit = :v" + (" FOR UPDATE" if lock else "")),
                {"v": visit},
            )
            .mappings()
            .first()
        )
        if row is None:
            raise VisitNotFoundError(f"visit {visit}: no next-visit event was received for it")
        return _event_of(row)


def _event_of(row: Any) -> NextVisit:
    return NextVisit(
        visit=int(row["visit"]),
        instrument=row["instrument"],
        mode=row["mode"],
        band=row["band"],
        ra=row["ra"],
        dec=row["dec"],
        mjd_tai=row["mjd_tai"],
        detectors=tuple(int(d) for d in row["detectors"]),
        expected_at=row["expected_at"],
    )
