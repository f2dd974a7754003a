"""Catch-up archiving: find the raws the observatory took but the archive missed, and archive them.

`dms.exposure_log` holds what the camera control system announced (exposure start and end events, as
published in the EFD). An exposure with an end event and no archived raw was missed (an outage of the
archiver); its files are looked for in landing directories (by obs id in the file name, else by the
OBSID header) and archived. Headers lacking required keys are completed from the logged events
("metadata generated from the EFD"). The primary archiver may archive the same file at the same time:
registration takes an advisory lock on the dataset id, so the file is archived once and the loser sees
"unchanged".
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from astropy.io import fits
from astropy.time import Time

from dms.services.archiver.bands import band_of
from dms.services.archiver.camera import camera
from dms.services.archiver.errors import HeaderError
from dms.services.archiver.ingest import ArchiveResult, archive_file, read_metadata
from dms.services.archiver.metadata import SEQ_PER_DAY, ExposureMetadata, Headers, _geometry, _int_key
from dms.services.archiver.rubin import CONTROLLER_INCREMENT
from dms.services.archiver.watch import PATTERNS
from dms.services.backbone.client import Backbone
from dms.services.backbone.errors import BackboneError


@dataclass(frozen=True)
class ExposureEvent:
    """An exposure start or end event."""

    instrument: str
    exposure_id: int
    event: str  # "start" | "end"
    event_time: datetime  # TAI
    obs_id: str
    physical_filter: str | None = None
    tracking_ra: float | None = None
    tracking_dec: float | None = None
    exposure_time: float | None = None


def record_event(conn: sa.Connection, event: ExposureEvent) -> None:
    """Log an event (a repeated event is ignored)."""
    conn.execute(
        sa.text(
            "INSERT INTO dms.exposure_log (instrument, exposure_id, event, event_time, obs_id, "
            "physical_filter, tracking_ra, tracking_dec, exposure_time) "
            "VALUES (:instrument, :exposure_id, :event, :event_time, "
            ":obs_id, :physical_filter, :tracking_ra, :tracking_dec, :exposure_time) ON CONFLICT DO NOTHING"
        ),
        dataclasses.asdict(event),
    )


def missed_exposures(conn: sa.Connection) -> list[Any]:
    """Exposures that ended but have no archived raw (with the metadata their events carry)."""
    return list(
        conn.execute(
            sa.text(
                """
                SELECT e.instrument, e.exposure_id, e.obs_id,
                       s.event_time AS begin_time, e.event_time AS end_time,
                       coalesce(e.physical_filter, s.physical_filter) AS physical_filter,
                       coalesce(s.tracking_ra, e.tracking_ra) AS tracking_ra,
                       coalesce(s.tracking_dec, e.tracking_dec) AS tracking_dec,
                       coalesce(s.exposure_time, e.exposure_time) AS exposure_time
                FROM dms.exposure_log e
                LEFT JOIN dms.exposure_log s ON s.instrument = e.instrument
                     AND s.exposure_id = e.exposure_id AND s.event = 'start'
                WHERE e.event = 'end' AND NOT EXISTS (
                    SELECT 1 FROM dms.dataset d WHERE d.dataset_type = 'raw'
                    AND d.data_id @> jsonb_build_object(
                        'instrument', e.instrument, 'exposure', e.exposure_id))
                ORDER BY e.event_time
                """
            )
        )
    )


@dataclass
class CatchUpReport:
    missed: int = 0
    results: list[ArchiveResult] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)  # obs ids with no file yet


def catch_up(backbone: Backbone, landing: list[Path]) -> CatchUpReport:
    """Archive the files of every missed exposure found under the landing directories."""
    with backbone.begin() as conn:
        missed = missed_exposures(conn)
    report = CatchUpReport(missed=len(missed))
    files = [p for d in landing for pattern in PATTERNS for p in sorted(Path(d).rglob(pattern))]
    header_ids: dict[Path, str | None] = {}
    for row in missed:
        matches = [p for p in files if row.obs_id in p.name] or [
            p for p in files if _header_obs_id(p, header_ids) == row.obs_id
        ]
        if not matches:
            report.not_found.append(row.obs_id)
        for path in matches:
            report.results.append(_archive(backbone, path, row))
    return report


def _archive(backbone: Backbone, path: Path, row: Any) -> ArchiveResult:
    try:
        try:
            meta = read_metadata(path)
        except HeaderError:
            meta = metadata_from_log(path, row)
        return archive_file(backbone, path, metadata=meta)
    except BackboneError as exc:
        return ArchiveResult(path, "failed", str(exc))


def _header_obs_id(path: Path, cache: dict[Path, str | None]) -> str | None:
    if path not in cache:
        try:
            cache[path] = str(fits.getheader(path).get("OBSID") or "") or None
        except (OSError, ValueError):
            cache[path] = None
    return cache[path]


def metadata_from_log(path: Path, row: Any) -> ExposureMetadata:
    """Metadata for a file whose headers lack required keys, from the logged start/end events."""
    if row.begin_time is None:
        raise HeaderError(f"{path}: headers incomplete and no start event logged for {row.obs_id}")
    begin = Time(row.begin_time, scale="tai")
    end = Time(row.end_time, scale="tai")
    with warnings.catch_warnings(), fits.open(path, memmap=False) as hdus:
        warnings.simplefilter("ignore")
        headers = Headers(hdus, str(path))
        geometry = _geometry(hdus)
        detector = _int_key(headers, "DETECTOR", "CCDCHIP")
        name = str(headers.get("DETNAME") or detector)
        known = camera(row.instrument)
        found = known.detector(f"{headers.get('RAFTBAY')}_{headers.get('CCDSLOT')}") if known else None
        if found is not None:  # a Rubin camera: its own detector numbering
            detector, name = found.id, found.name
    return ExposureMetadata(
        instrument=row.instrument,
        exposure_id=row.exposure_id,
        obs_id=row.obs_id,
        day_obs=_day_obs_of(row.instrument, row.exposure_id),
        seq_num=row.exposure_id % SEQ_PER_DAY,
        detector=detector,
        detector_name=name,
        physical_filter=row.physical_filter or "none",
        band=band_of(row.physical_filter or "none"),
        begin=begin,
        end=end,
        exposure_time=row.exposure_time if row.exposure_time is not None else float((end - begin).sec),
        tracking_ra=row.tracking_ra,
        tracking_dec=row.tracking_dec,
        **geometry,
    )


def _day_obs_of(instrument: str, exposure_id: int) -> int:
    """The observing day of an exposure id; Rubin's ids carry 1000 years per controller index on it."""
    day = exposure_id // SEQ_PER_DAY
    if camera(instrument) is not None and day >= 2 * CONTROLLER_INCREMENT:
        day -= (day // CONTROLLER_INCREMENT - 2) * CONTROLLER_INCREMENT
    return day
