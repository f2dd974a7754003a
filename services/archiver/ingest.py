"""`dms archive`: raw FITS files into the Data Backbone, with registry, ConsDB and ObsCore rows.

Per file: open and check it with astropy (a FITS file, not truncated), translate its headers, copy it
into the primary site's store (checksummed while copying), then in ONE transaction register the dataset
and write the exposure dimension rows, the ConsDB exposure row (LSSTCam) and the ObsCore row. A failure
anywhere rolls the transaction back and removes the copy, so a file is either fully archived or not at
all; archiving it again is then a no-op (same bytes) or a conflict error (different bytes).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from astropy.io import fits
from tqdm import tqdm

from dms.services.archiver import rows
from dms.services.archiver.errors import ArchiveError, ExposureConflictError, NotFitsError
from dms.services.archiver.metadata import ExposureMetadata, translate
from dms.services.backbone import registry
from dms.services.backbone.client import Backbone
from dms.services.backbone.errors import BackboneError
from dms.services.backbone.formats import format_named
from dms.services.backbone.registry import DatasetRef

log = logging.getLogger(__name__)

RAW = "raw"
RAW_DIMENSIONS = ["instrument", "exposure", "detector"]


def raw_run(instrument: str) -> str:
    """The RUN collection raws of an instrument are archived in (as the Butler names it)."""
    return f"{instrument}/raw/all"


@dataclass(frozen=True)
class ArchiveResult:
    """What happened to one file: archived, already archived (same bytes), or failed (with why)."""

    path: Path
    status: str  # "archived" | "unchanged" | "failed"
    message: str
    ref: DatasetRef | None = None


def read_metadata(path: Path) -> ExposureMetadata:
    """Open a raw FITS file, check it is complete, and translate its headers."""
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdus:
                _check_complete(path, hdus)
                return translate(hdus, str(path))
    except (OSError, ValueError, IndexError) as exc:
        raise NotFitsError(
            f"{path}: not a readable FITS file ({exc}); raw files must be FITS (single or multi-extension)"
        ) from exc


def _check_complete(path: Path, hdus: fits.HDUList) -> None:
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return  # gzip: astropy read it whole, so a truncated file already failed to decompress
    size = path.stat().st_size
    last = hdus[-1].fileinfo()
    if last is None:
        return
    end = int(last["datLoc"]) + int(last["datSpan"])
    if end > size:
        raise NotFitsError(
            f"{path}: truncated FITS file ({size} bytes, its headers describe {end}); nothing archived"
        )


def archive_file(
    backbone: Backbone, path: Path, *, metadata: ExposureMetadata | None = None
) -> ArchiveResult:
    """Archive one raw file atomically; raises ArchiveError (or another BackboneError) on failure."""
    path = Path(path)
    meta = metadata or read_metadata(path)
    fmt = format_named("fits")
    suffix = next(
        (s for s in sorted(fmt.suffixes, key=len, reverse=True) if path.name.lower().endswith(s)), ".fits"
    )
    data_id = {"instrument": meta.instrument, "exposure": meta.exposure_id, "detector": meta.detector}
    run = raw_run(meta.instrument)
    stored = backbone.store().put_file(path, suffix, str(registry.dataset_id(RAW, run, data_id)))
    try:
        with backbone.begin() as conn:
            registry.ensure_dataset_type(conn, RAW, RAW_DIMENSIONS, "Exposure")
            registry.ensure_run(conn, run, f"Raw {meta.instrument} images, as archived")
            ref, created = registry.register_file(
                conn,
                dataset_type=RAW,
                run=run,
                data_id=data_id,
                stored=stored,
                fmt=fmt,
                site=backbone.site,
                label=str(path),
                rehash=lambda algorithm: backbone.store().checksum(stored.path, algorithm)[1],
            )
            if created:
                rows.write_exposure(conn, meta, str(path))
                rows.write_obscore(conn, meta, ref, backbone.store().absolute(stored.path), run)
    except sa.exc.IntegrityError as exc:
        backbone.discard_if_unreferenced(stored.path)
        raise _integrity_error(path, meta, exc) from exc
    except BaseException:
        backbone.discard_if_unreferenced(stored.path)
        raise
    if ref.path != stored.path:  # already archived under another checksum algorithm
        backbone.discard_if_unreferenced(stored.path)
    if not created:
        return ArchiveResult(path, "unchanged", f"{path}: already archived as {ref.id}", ref)
    notes = "".join(f"; {note}" for note in meta.notes)
    return ArchiveResult(
        path, "archived", f"{path}: archived as raw {registry.canonical_data_id(data_id)}{notes}", ref
    )


# What a violated CHECK constraint of the exposure tables means, for the error message.
CONSTRAINT_MEANINGS = {
    "ck_exposure_times": "the exposure ends before it begins, or has a negative exposure or dark time",
    "ck_exposure_pointing": "the pointing is outside RA 0..360 / Dec -90..90",
    "ck_day_obs_timespan": "the observing day's timespan is reversed",
    "ck_detector_id": "the detector number is negative",
}


def _integrity_error(path: Path, meta: ExposureMetadata, exc: sa.exc.IntegrityError) -> ArchiveError:
    """The real cause of a refused insert: a concurrent clash only for unique-key violations."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or "?"
    first_line = str(orig).splitlines()[0] if orig is not None else str(exc)
    if sqlstate == "23505":  # unique_violation: another archiver registered the same exposure first
        return ExposureConflictError(
            f"{path}: exposure {meta.exposure_id} (obs id {meta.obs_id}) clashes with an exposure archived "
            f"at the same time ({constraint}): {first_line}; nothing archived"
        )
    meaning = CONSTRAINT_MEANINGS.get(constraint, "a value the archive's tables do not accept")
    return ArchiveError(
        f"{path}: exposure {meta.exposure_id} (obs id {meta.obs_id}) refused by the archive's constraint "
        f"{constraint}: {meaning} (start {meta.begin.tai.isot} TAI, end {meta.end.tai.isot} TAI, exposure "
        f"time {meta.exposure_time} s): {first_line}; nothing archived"
    )


def archive_files(
    backbone: Backbone, paths: Iterable[Path], *, progress: bool = False, workers: int = 2
) -> list[ArchiveResult]:
    """Archive each file on its own: a bad file is reported and the rest of the batch still archives.

    `workers` files are archived at once (threads: copying, hashing and the database release the GIL),
    so one file's header parsing overlaps another's copy; results come back in the order given."""
    files = [Path(p) for p in paths]
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(files), desc="archive", unit="file", disable=not progress) as bar,
    ):
        futures = [pool.submit(_archive_one, backbone, path) for path in files]
        results = []
        for future in futures:
            results.append(future.result())
            bar.update(1)
    return results


def _archive_one(backbone: Backbone, path: Path) -> ArchiveResult:
    try:
        return archive_file(backbone, path)
    except BackboneError as exc:
        log.warning("%s", exc)
        return ArchiveResult(path, "failed", str(exc))
