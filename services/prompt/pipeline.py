"""One visit of Alert Production, from the end of readout to alerts archived.

    fetch raws -> payload on every detector (pool) -> association (in the database) -> DiaObject
    aggregates (in the database) -> difference images to the Data Backbone -> ONE Apdb.store -> alerts
    (packets with cutouts, the alert archive) -> QC metrics and timings

The store is the visit's commit point: before it, nothing of the visit is in the APDB; it is one
transaction. A redo of a visit whose store had committed (a crash while sending alerts) finds the visit's
DiaSources in the APDB and sends only the alerts of the detectors not yet archived, from the stored rows,
so neither DiaSources nor alerts are ever duplicated. Detectors whose inputs are bad (no template, corrupt
raw, missing calibration, unknown detector) are left out with their error recorded; a failure of the
machinery (a worker that died, the database) fails the visit, which offline processing redoes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from psycopg import sql

from dms.deployment import Deployment
from dms.errors import DMSError
from dms.services.alerts.archive import archive_batch
from dms.services.alerts.batch import batch_packets
from dms.services.alerts.packets import Cutouts
from dms.services.apdb import Apdb, Circle
from dms.services.apdb.copyio import copy_out
from dms.services.apdb.tables import apdb_table
from dms.services.backbone import Backbone
from dms.services.backbone.errors import DatasetConflictError
from dms.services.prompt import qc
from dms.services.prompt.aggregates import updated_objects
from dms.services.prompt.association import associate
from dms.services.prompt.payloads import DetectorOutput, DetectorWork, Payload, WorkerPool
from dms.services.prompt.visits import NextVisit, VisitStore

log = logging.getLogger(__name__)

DIFFERENCE = "prompt_difference"
DIFFERENCE_RUN = "prompt/difference"
FIELD_RADIUS_DEG = 2.1  # LSSTCam's field is 3.5 degrees across: every detector lies within this


@dataclass(frozen=True)
class PipelineConfig:
    """How a visit is processed."""

    association_radius_arcsec: float = 1.0
    cutout_size: int = 30
    field_radius_deg: float = FIELD_RADIUS_DEG


@dataclass
class Prefetched:
    """What the next-visit event fetched ahead of readout."""

    known_objects: pd.DataFrame | None
    detector_inputs: dict[int, Any]
    detector_errors: dict[int, str]
    seconds: float


@dataclass
class VisitOutcome:
    visit: int
    state: str
    error: str | None
    n_dia_sources: int
    n_alerts: int
    timings: dict[str, float] = field(default_factory=dict)
    detector_errors: dict[int, str] = field(default_factory=dict)
    redone_from_store: bool = False


class VisitFailed(DMSError):
    """The visit could not be completed (the message says at which step); it is left for offline redo."""


class VisitProcessor:
    """Processes visits with one payload, pool, APDB and Data Backbone."""

    def __init__(
        self,
        deployment: Deployment,
        payloads: Mapping[str, Payload],
        pool: WorkerPool,
        config: PipelineConfig | None = None,
    ) -> None:
        self.deployment = deployment
        self.payloads = dict(payloads)
        self.pool = pool
        self.config = config or PipelineConfig()
        self.apdb = Apdb.from_deployment(deployment)
        self.backbone = Backbone(deployment)
        self.visits = VisitStore(deployment)

    def close(self) -> None:
        self.apdb.close()

    def payload_for(self, event: NextVisit) -> Payload:
        try:
            return self.payloads[event.mode]
        except KeyError:
            raise VisitFailed(
                f"visit {event.visit}: no payload is configured for {event.mode} mode"
            ) from None

    # -- before readout ------------------------------------------------------------------------------------

    def prefetch(self, event: NextVisit) -> Prefetched:
        """Templates and calibrations of every detector, and the field's current DiaObjects."""
        start = time.perf_counter()
        known = self._known_objects(event)
        inputs: dict[int, Any] = {}
        errors: dict[int, str] = {}
        for detector in event.detectors:
            try:
                inputs[detector] = self.payload_for(event).prefetch(self.backbone, event, detector)
            except DMSError as exc:
                errors[detector] = str(exc)
        return Prefetched(known, inputs, errors, time.perf_counter() - start)

    def _known_objects(self, event: NextVisit) -> pd.DataFrame | None:
        """diaObjectId, ra, dec of the current DiaObjects of the visit's field (for forced photometry)."""
        if event.mode != "science" or event.ra is None or event.dec is None:
            return None
        objects = self.apdb.get_dia_objects(Circle(event.ra, event.dec, self.config.field_radius_deg))
        return objects[["diaObjectId", "ra", "dec"]].reset_index(drop=True)

    # -- after readout -------------------------------------------------------------------------------------

    def process(self, event: NextVisit, prefetched: Prefetched | None = None) -> VisitOutcome:
        """Process a claimed visit to the end; records the outcome in dms.prompt_visit either way."""
        timings: dict[str, float] = {}
        ready = time.perf_counter()
        try:
            outcome = self._process(event, prefetched, timings)
        except Exception as exc:
            error = str(exc) if isinstance(exc, DMSError) else f"{type(exc).__name__}: {exc}"
            log.error("visit %s failed: %s", event.visit, error)
            timings["total"] = time.perf_counter() - ready
            self.visits.finish(event.visit, "failed", error=error, timings=timings)
            return VisitOutcome(event.visit, "failed", error, 0, 0, timings)
        timings["total"] = time.perf_counter() - ready
        outcome.timings = timings
        self.visits.finish(
            event.visit,
            outcome.state,
            error=outcome.error,
            timings=timings,
            n_dia_sources=outcome.n_dia_sources,
            n_alerts=outcome.n_alerts,
        )
        return outcome

    def _process(
        self, event: NextVisit, prefetched: Prefetched | None, timings: dict[str, float]
    ) -> VisitOutcome:
        with _timed(timings, "prefetch"):
            if prefetched is None:
                prefetched = self.prefetch(event)
        errors = dict(prefetched.detector_errors)
        with _timed(timings, "known_objects"):
            # read again now: the previous visit of the field may have been stored after the prefetch
            known = self._known_objects(event)
        works = []
        with _timed(timings, "fetch_raw"):
            for detector in event.detectors:
                if detector in errors:
                    continue
                try:
                    raw = self.payload_for(event).fetch_raw(self.backbone, event, detector)
                except DMSError as exc:
                    errors[detector] = str(exc)
                    continue
                works.append(
                    DetectorWork(
                        event,
                        detector,
                        raw,
                        prefetched.detector_inputs.get(detector),
                        known,
                        self.config.cutout_size,
                    )
                )
        for detector, error in errors.items():
            self.visits.detector_finished(event.visit, detector, "failed", error=error)
        outputs = self._run_payload(event, works, timings)
        crashed = {o.detector: o.error for o in outputs.values() if not o.ok and not o.input_error}
        errors.update({o.detector: o.error or "" for o in outputs.values() if not o.ok and o.input_error})
        if crashed:
            detail = "; ".join(f"detector {d}: {e}" for d, e in sorted(crashed.items()))
            raise VisitFailed(f"visit {event.visit}: the payload failed ({detail}); nothing was stored")
        good = {d: o for d, o in outputs.items() if o.ok and o.result is not None}
        if event.mode == "calibration":
            return self._calibration_qc(event, good, errors, timings)
        return self._science(event, good, errors, timings)

    def _run_payload(
        self, event: NextVisit, works: list[DetectorWork], timings: dict[str, float]
    ) -> dict[int, DetectorOutput]:
        outputs: dict[int, DetectorOutput] = {}
        for work in works:
            self.visits.detector_started(event.visit, work.detector)
        with _timed(timings, "payload"):
            for output in self.pool.run(self.payload_for(event), works):
                outputs[output.detector] = output
                result = output.result
                self.visits.detector_finished(
                    event.visit,
                    output.detector,
                    "done" if output.ok else "failed",
                    error=output.error,
                    timings={**output.timings, "total": output.seconds},
                    worker=output.worker,
                    n_dia_sources=None if result is None else len(result.dia_sources),
                    n_forced_sources=(
                        None
                        if result is None or result.forced_sources is None
                        else len(result.forced_sources)
                    ),
                )
        per_detector = [o.seconds for o in outputs.values()]
        if per_detector:
            timings["payload_detector_max"] = max(per_detector)
            for step in sorted({s for o in outputs.values() for s in o.timings}):
                timings[f"payload.{step}"] = max(o.timings.get(step, 0.0) for o in outputs.values())
        return outputs

    # -- science -------------------------------------------------------------------------------------------

    def _science(
        self,
        event: NextVisit,
        good: dict[int, DetectorOutput],
        errors: dict[int, str],
        timings: dict[str, float],
    ) -> VisitOutcome:
        assert event.mjd_tai is not None
        visit_time = Time(event.mjd_tai, format="mjd", scale="tai")
        stored_detectors = self._stored_detectors(event.visit)
        redo = bool(stored_detectors)
        if redo:
            # The store of this visit committed before a failure: the APDB is the truth, stored once.
            with _timed(timings, "read_stored"):
                sources = self._stored_sources(event.visit)
                objects = self._current_objects(event, sources)
        else:
            sources, forced = _concat_sources(good)
            with _timed(timings, "association"):
                association = associate(self.apdb, sources, self.config.association_radius_arcsec)
                if len(sources):
                    sources["diaObjectId"] = association.object_ids(sources["diaSourceId"].to_numpy(np.int64))
            with _timed(timings, "aggregates"):
                objects = updated_objects(self.apdb, sources, visit_time) if len(sources) else _no_objects()
            with _timed(timings, "difference_images"):
                self._put_differences(event, good)
            with _timed(timings, "apdb_store"):
                writable = self._drop_later_versions(objects, float(visit_time.tai.mjd))
                self.apdb.store(visit_time, writable, sources if len(sources) else None, forced)
        with _timed(timings, "alerts"):
            n_alerts = self._alerts(event, visit_time, sources, objects, good)
        with _timed(timings, "qc"):
            self._record_qc(event, good, len(sources), n_alerts, timings)
        error = _detector_summary(errors)
        return VisitOutcome(event.visit, "done", error, len(sources), n_alerts, timings, errors, redo)

    def _put_differences(self, event: NextVisit, good: Mapping[int, DetectorOutput]) -> None:
        for detector, output in good.items():
            if output.difference_fits is None:
                continue
            hdus = fits.HDUList.fromstring(output.difference_fits)
            data_id = {"instrument": event.instrument, "visit": event.visit, "detector": detector}
            try:
                self.backbone.put(
                    hdus,
                    DIFFERENCE,
                    data_id,
                    run=DIFFERENCE_RUN,
                    dimensions=["instrument", "visit", "detector"],
                )
            except DatasetConflictError:
                # a redo's image differs in its bits from the first attempt's: the first one is kept
                log.info(
                    "visit %s detector %s: difference image kept from an earlier attempt",
                    event.visit,
                    detector,
                )

    def _drop_later_versions(self, objects: pd.DataFrame, mjd: float) -> pd.DataFrame:
        """Objects whose current version is newer than this visit (a late redo) keep it: their aggregates
        take this visit's sources in at their next visit."""
        if len(objects) == 0:
            return objects
        ids = "{" + ",".join(str(int(i)) for i in objects["diaObjectId"]) + "}"
        query = sql.SQL(
            'SELECT "diaObjectId" FROM {} WHERE "diaObjectId" = ANY({}::bigint[]) '
            'AND "validityEndMjdTai" IS NULL AND "validityStartMjdTai" >= {}'
        ).format(sql.Identifier(self.apdb.config.namespace, "DiaObject"), sql.Literal(ids), sql.Literal(mjd))
        with self.apdb.cursor() as cur:
            later = {int(r[0]) for r in cur.execute(query).fetchall()}
        if later:
            log.warning(
                "%d DiaObjects already have versions after this visit; their versions are kept", len(later)
            )
        return objects[~objects["diaObjectId"].isin(later)].reset_index(drop=True)

    def _stored_detectors(self, visit: int) -> set[int]:
        query = sql.SQL(
            "SELECT DISTINCT detector FROM {s} WHERE visit = %(v)s UNION SELECT DISTINCT detector FROM {f} "
            "WHERE visit = %(v)s"
        ).format(
            s=sql.Identifier(self.apdb.config.namespace, "DiaSource"),
            f=sql.Identifier(self.apdb.config.namespace, "DiaForcedSource"),
        )
        with self.apdb.cursor() as cur:
            return {int(r[0]) for r in cur.execute(query, {"v": int(visit)}).fetchall()}

    def _stored_sources(self, visit: int) -> pd.DataFrame:
        table = apdb_table("DiaSource")
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
        query = sql.SQL('SELECT {c} FROM {t} WHERE visit = {v} ORDER BY "diaSourceId"').format(
            c=columns, t=sql.Identifier(self.apdb.config.namespace, "DiaSource"), v=sql.Literal(int(visit))
        )
        with self.apdb.cursor() as cur:
            frame: pd.DataFrame = copy_out(cur, query, table.schema).to_pandas()
        return frame.drop(columns=["_healpix_29"], errors="ignore")

    def _current_objects(self, event: NextVisit, sources: pd.DataFrame) -> pd.DataFrame:
        if len(sources) == 0:
            return _no_objects()
        assert event.ra is not None and event.dec is not None
        objects = self.apdb.get_dia_objects(Circle(event.ra, event.dec, self.config.field_radius_deg))
        ids = set(sources["diaObjectId"].dropna().astype(np.int64).tolist())
        return objects[objects["diaObjectId"].isin(ids)].reset_index(drop=True)

    def _alerts(
        self,
        event: NextVisit,
        visit_time: Time,
        sources: pd.DataFrame,
        objects: pd.DataFrame,
        good: Mapping[int, DetectorOutput],
    ) -> int:
        """Packets for every detector of the visit not yet in the alert archive; the number archived."""
        if len(sources) == 0:
            return 0
        archived = self._archived_detectors(event.visit)
        mjd = float(visit_time.tai.mjd)
        ids = sources["diaObjectId"].dropna().astype(np.int64).unique().tolist()
        region = Circle(float(event.ra or 0.0), float(event.dec or 0.0), self.config.field_radius_deg)
        history = self.apdb.get_dia_sources(region, ids, visit_time)
        forced = self.apdb.get_dia_forced_sources(region, ids, visit_time)
        history = _before(history, mjd)
        forced = _before(forced, mjd)
        objects = objects.drop(columns=["_healpix_29"], errors="ignore")
        if "validityStartMjdTai" not in objects:
            objects = objects.assign(validityStartMjdTai=mjd)  # the version this visit's store made
        total = 0
        for detector, batch in sources.groupby("detector", sort=True):
            det = int(str(detector))
            batch = batch.reset_index(drop=True)
            if det not in archived:
                cutouts = _cutouts_for(batch, good.get(det))
                packets = batch_packets(batch, objects, history, forced, cutouts)
                self._archive(event, det, batch, packets)
            total += len(batch)
        return total

    def _archive(self, event: NextVisit, detector: int, batch: pd.DataFrame, packets: list[bytes]) -> None:
        archive_batch(self.backbone, event.visit, detector, batch, packets)

    def _archived_detectors(self, visit: int) -> set[int]:
        import sqlalchemy as sa

        with self.backbone.begin() as conn:
            rows = conn.execute(
                sa.text("SELECT DISTINCT detector FROM dms.alert WHERE visit = :v"), {"v": int(visit)}
            ).all()
        return {int(r[0]) for r in rows}

    def _record_qc(
        self,
        event: NextVisit,
        good: Mapping[int, DetectorOutput],
        n_sources: int,
        n_alerts: int,
        timings: Mapping[str, float],
    ) -> None:
        per_detector = {d: o.result.metrics for d, o in good.items() if o.result is not None}
        rows: list[tuple[str, float, Mapping[str, Any]]] = []
        for detector, metrics in per_detector.items():
            rows += [(qc.metric_name(k), v, {"detector": detector}) for k, v in metrics.items()]
        rows += [(k, v, {}) for k, v in qc.visit_metrics(per_detector, n_sources, n_alerts).items()]
        rows += [("prompt_step_seconds", seconds, {"step": step}) for step, seconds in timings.items()]
        qc.record_many(self.deployment, event.instrument, event.visit, rows)

    # -- calibration ---------------------------------------------------------------------------------------

    def _calibration_qc(
        self,
        event: NextVisit,
        good: dict[int, DetectorOutput],
        errors: dict[int, str],
        timings: dict[str, float],
    ) -> VisitOutcome:
        with _timed(timings, "qc"):
            for detector, output in good.items():
                assert output.result is not None
                qc.record(
                    self.deployment,
                    event.instrument,
                    event.visit,
                    output.result.metrics,
                    {"detector": detector},
                )
        return VisitOutcome(event.visit, "done", _detector_summary(errors), 0, 0, timings, errors)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


def _concat_sources(good: Mapping[int, DetectorOutput]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    frames = [
        o.result.dia_sources for o in good.values() if o.result is not None and len(o.result.dia_sources)
    ]
    forced = [
        o.result.forced_sources
        for o in good.values()
        if o.result is not None and o.result.forced_sources is not None and len(o.result.forced_sources)
    ]
    sources = pd.concat(frames, ignore_index=True) if frames else _no_sources()
    if "diaObjectId" in sources:
        sources = sources.drop(columns=["diaObjectId"])
    duplicated = sources["diaSourceId"].duplicated()
    if duplicated.any():
        raise VisitFailed(
            f"the payload gave diaSourceId {int(sources['diaSourceId'][duplicated].iloc[0])} twice"
        )
    return sources, (pd.concat(forced, ignore_index=True) if forced else None)


def _no_sources() -> pd.DataFrame:
    return pd.DataFrame({"diaSourceId": np.zeros(0, np.int64), "ra": [], "dec": [], "detector": []})


def _no_objects() -> pd.DataFrame:
    """An empty DiaObject frame with every column a store needs (a visit without DiaSources)."""
    fixed = {"validityStartMjdTai", "validityEndMjdTai", "_healpix_29"}
    table = apdb_table("DiaObject").schema.empty_table()
    frame: pd.DataFrame = table.select([c for c in table.column_names if c not in fixed]).to_pandas()
    return frame


def _before(frame: pd.DataFrame | None, mjd: float) -> pd.DataFrame | None:
    if frame is None or len(frame) == 0:
        return frame
    return frame[frame["midpointMjdTai"] < mjd].drop(columns=["_healpix_29"], errors="ignore")


def _cutouts_for(batch: pd.DataFrame, output: DetectorOutput | None) -> list[Cutouts] | None:
    """The worker's cutouts in the order of `batch` (matched by diaSourceId), None when there are none."""
    if output is None or output.result is None or not output.cutouts:
        return None
    made = dict(
        zip(output.result.dia_sources["diaSourceId"].astype(np.int64).tolist(), output.cutouts, strict=True)
    )
    return [made.get(int(i), Cutouts()) for i in batch["diaSourceId"]]


def _detector_summary(errors: Mapping[int, str]) -> str | None:
    if not errors:
        return None
    return "; ".join(f"detector {d}: {e}" for d, e in sorted(errors.items()))
