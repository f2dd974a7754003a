"""Catch-up archiving from the exposure log: missed raws found and archived, no duplicates in a race."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from astropy.io import fits
from astropy.time import Time
from backbone_support import lsstcam_raw
from click.testing import CliRunner

from dms.cli import main
from dms.services.archiver.catchup import ExposureEvent, catch_up, missed_exposures, record_event
from dms.services.archiver.ingest import archive_file, archive_files
from dms.services.backbone import Backbone

DAY = 20250416

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def log_exposure(backbone: Backbone, path: Path) -> None:
    """The start and end events the camera published for the exposure in `path`."""
    header = fits.getheader(path)
    exposure_id = header["DAYOBS"] * 100_000 + header["SEQNUM"]
    common = {
        "instrument": "LSSTCam",
        "exposure_id": exposure_id,
        "obs_id": header["OBSID"],
        "physical_filter": header["FILTER"],
        "tracking_ra": header["RA"],
        "tracking_dec": header["DEC"],
        "exposure_time": header["EXPTIME"],
    }
    with backbone.begin() as conn:
        record_event(
            conn,
            ExposureEvent(event="start", event_time=Time(header["DATE-BEG"], scale="tai").datetime, **common),
        )
        record_event(
            conn,
            ExposureEvent(event="end", event_time=Time(header["DATE-END"], scale="tai").datetime, **common),
        )


def test_missed_exposures_are_found_and_archived(backbone: Backbone, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    files = [
        lsstcam_raw(landing / f"MC_O_{DAY}_{n:06d}_R22_S11.fits", day_obs=DAY, seq_num=n) for n in (1, 2, 3)
    ]
    for path in files:
        log_exposure(backbone, path)
    # The live archiver caught exposure 1; the outage lost 2 and 3. Exposure 3's file lacks its start
    # time (a partial header): its metadata comes from the logged events.
    archive_file(backbone, files[0])
    logged_begin = Time(fits.getheader(files[2])["DATE-BEG"], scale="tai").datetime
    lsstcam_raw(files[2], day_obs=DAY, seq_num=3, drop=("DATE-BEG", "MJD-BEG"))
    with backbone.begin() as conn:
        assert [r.exposure_id % 100_000 for r in missed_exposures(conn)] == [2, 3]
    report = catch_up(backbone, [landing])
    assert report.missed == 2 and [r.status for r in report.results] == ["archived", "archived"]
    with backbone.begin() as conn:
        assert missed_exposures(conn) == []
        begin = conn.execute(
            sa.text("SELECT timespan_begin FROM dms.exposure WHERE id = :i"), {"i": DAY * 100_000 + 3}
        ).scalar_one()
    assert begin == logged_begin
    again = CliRunner().invoke(
        main, ["archive", "--catch-up", str(landing), "--data-dir", str(backbone.deployment.data_dir)]
    )
    assert again.exit_code == 0 and "0 missed exposures" in again.output


def test_exposure_whose_file_has_not_arrived_stays_missed(backbone: Backbone, tmp_path: Path) -> None:
    path = lsstcam_raw(tmp_path / "elsewhere.fits", day_obs=DAY, seq_num=9)
    log_exposure(backbone, path)
    empty = tmp_path / "landing"
    empty.mkdir()
    report = catch_up(backbone, [empty])
    assert report.not_found == [f"MC_O_{DAY}_000009"] and report.results == []


def test_primary_archiver_and_catch_up_racing_archive_each_file_once(
    backbone: Backbone, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    files = [lsstcam_raw(landing / f"raw_{n}.fits", day_obs=DAY, seq_num=n, ra=10 + n) for n in range(1, 9)]
    for path in files:
        log_exposure(backbone, path)
    outcomes: list[str] = []
    primary = threading.Thread(
        target=lambda: outcomes.extend(r.status for r in archive_files(backbone, files))
    )
    primary.start()
    outcomes.extend(r.status for r in catch_up(backbone, [landing]).results)
    primary.join()
    assert "failed" not in outcomes and outcomes.count("archived") == 8
    with backbone.begin() as conn:
        counts = [
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("dms.dataset", "dms.exposure", 'ivoa."ObsCore"', "cdb_lsstcam.exposure")
        ]
    assert counts == [8, 8, 8, 8]
