"""`dms archive` with real FITS files (astropy's own HST, Chandra, DSS and small-telescope files) and
LSSTCam-style multi-extension raws: registry, ConsDB and ObsCore rows checked against astropy."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from backbone_support import REAL_FILES, lsstcam_raw
from click.testing import CliRunner

from dms.cli import main
from dms.services.archiver.ingest import archive_file, archive_files
from dms.services.archiver.watch import watch
from dms.services.backbone import Backbone
from dms.services.backbone.errors import DatasetConflictError
from dms.services.backbone.verify import verify

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures


def obscore(backbone: Backbone) -> dict[str, dict]:
    with backbone.begin() as conn:
        rows = conn.execute(sa.text('SELECT * FROM ivoa."ObsCore"')).mappings().all()
    return {row["obs_id"]: dict(row) for row in rows}


def test_real_hst_files_archive_with_times_filters_and_footprints(backbone: Backbone) -> None:
    results = archive_files(backbone, [REAL_FILES["wfpc2"], REAL_FILES["acs"], REAL_FILES["stis"]])
    assert [r.status for r in results] == ["archived"] * 3, [r.message for r in results]
    rows = obscore(backbone)
    for key, obs_id in (("wfpc2", "U2EQ0201T"), ("acs", "j94f05bgq"), ("stis", "o4sp040b0")):
        with fits.open(REAL_FILES[key]) as hdus:
            header = hdus[0].header if "EXPSTART" in hdus[0].header else hdus[1].header
            begin = Time(header["EXPSTART"], format="mjd", scale="utc").tai.mjd
            end = Time(header["EXPEND"], format="mjd", scale="utc").tai.mjd
        row = rows[obs_id]
        assert row["t_min"] == pytest.approx(begin, abs=1e-9) and row["t_max"] == pytest.approx(end, abs=1e-9)
        assert row["dataproduct_type"] == "image" and row["calib_level"] == 1
        assert row["access_format"] == "image/fits" and row["access_url"].startswith("file://")
        assert Path(row["access_url"][len("file://") :]).read_bytes() == REAL_FILES[key].read_bytes()
    # ACS: F606W (centre 606 nm, wide) and the footprint of its two SIP-distorted chips.
    acs = rows["j94f05bgq"]
    assert acs["lsst_filter"] == "F606W" and acs["em_min"] < 606e-9 < acs["em_max"]
    with warnings.catch_warnings(), fits.open(REAL_FILES["acs"]) as hdus:
        warnings.simplefilter("ignore")
        corners = np.vstack(
            [
                WCS(h.header, hdus).celestial.calc_footprint(axes=(h.header["NAXIS1"], h.header["NAXIS2"]))
                for h in hdus
                if h.name == "SCI"
            ]
        )
    assert acs["s_ra"] == pytest.approx(corners[:, 0].mean(), abs=acs["s_fov"])
    assert acs["s_dec"] == pytest.approx(corners[:, 1].mean(), abs=acs["s_fov"])
    assert acs["s_region"].startswith("POLYGON ICRS ")
    # STIS has no celestial WCS (a spectrum): the target position is used, no region.
    stis = rows["o4sp040b0"]
    assert (stis["s_ra"], stis["s_dec"], stis["s_region"]) == (
        pytest.approx(176.1216666667),
        pytest.approx(48.51611111111),
        None,
    )


def test_real_files_with_other_conventions(backbone: Backbone) -> None:
    results = archive_files(backbone, [REAL_FILES["apogee"], REAL_FILES["chandra"], REAL_FILES["dss_gz"]])
    assert [r.status for r in results] == ["archived"] * 3, [r.message for r in results]
    with backbone.begin() as conn:
        exposures = {r.instrument: r for r in conn.execute(sa.text("SELECT * FROM dms.exposure"))}
    apogee = exposures["Apogee_Alta"]
    header = fits.getheader(REAL_FILES["apogee"])
    expected = Time(header["DATE-OBS"], scale="utc").tai
    assert abs((Time(apogee.timespan_begin, scale="tai") - expected).sec) < 1e-3
    assert apogee.exposure_time == header["EXPTIME"] and apogee.physical_filter == "B"
    assert exposures["ACIS"].obs_id == str(fits.getheader(REAL_FILES["chandra"], 1)["OBS_ID"])
    # The gzip-compressed DSS plate is stored as is, and reads back identical.
    ref = backbone.list("raw", where={"instrument": "UK_48-inch_Schmidt"})[0]
    assert ref.path is not None and ref.path.endswith(".fits.gz")
    assert backbone.store().absolute(ref.path).read_bytes() == REAL_FILES["dss_gz"].read_bytes()


def test_lsstcam_multi_extension_raw_fills_registry_consdb_and_obscore(
    backbone: Backbone, tmp_path: Path
) -> None:
    path = lsstcam_raw(tmp_path / "raw.fits", day_obs=20250415, seq_num=123, raft="R22", slot="S11")
    result = archive_file(backbone, path)
    assert result.status == "archived"
    exposure_id = 20250415 * 100_000 + 123
    assert result.ref is not None and result.ref.data_id == {
        "instrument": "LSSTCam",
        "exposure": exposure_id,
        "detector": 94,
    }
    header = fits.getheader(path)
    with backbone.begin() as conn:
        cdb = conn.execute(sa.text("SELECT * FROM cdb_lsstcam.exposure")).mappings().one()
        ccd = conn.execute(sa.text("SELECT * FROM cdb_lsstcam.ccdexposure")).mappings().one()
        exp = conn.execute(sa.text("SELECT * FROM dms.exposure")).mappings().one()
    assert cdb["exposure_id"] == exposure_id and cdb["exposure_name"] == header["OBSID"]
    assert cdb["obs_start_mjd"] == pytest.approx(header["MJD-BEG"], abs=1e-9)
    assert (
        cdb["band"] == "r" and cdb["physical_filter"] == "r_57" and cdb["altitude_start"] == pytest.approx(65)
    )
    assert ccd["detector"] == 94 and ccd["ccdexposure_id"] == exposure_id * 1000 + 94
    assert exp["timespan_begin"] == Time(header["DATE-BEG"], scale="tai").datetime
    assert exp["timespan_end"] == Time(header["DATE-END"], scale="tai").datetime
    row = obscore(backbone)[header["OBSID"]]
    # Rubin raws carry no sky WCS: the region is R22_S11's place in the camera (the E2V detector of
    # 4096 x 4004 pixels at 0.2" at the focal-plane centre), not the amplifier headers' test WCS.
    assert row["s_ra"] == pytest.approx(150.0, abs=1e-6) and row["s_dec"] == pytest.approx(2.2, abs=1e-6)
    assert row["s_fov"] == pytest.approx(math.hypot(4096, 4004) * 0.2 / 3600, rel=1e-3)
    assert (row["em_min"], row["em_max"]) == (pytest.approx(552e-9), pytest.approx(691e-9))
    assert row["lsst_detector"] == 94 and row["obs_publisher_did"].endswith(str(result.ref.id))
    back = backbone.get("raw", result.ref.data_id)
    assert len(back) == 17 and int(back[16].data[0, 0]) == 1015


def test_same_file_twice_is_one_dataset_and_different_bytes_conflict(
    backbone: Backbone, tmp_path: Path
) -> None:
    path = lsstcam_raw(tmp_path / "a.fits")
    assert archive_file(backbone, path).status == "archived"
    assert archive_file(backbone, path).status == "unchanged"
    original = path.read_bytes()
    changed = lsstcam_raw(tmp_path / "b.fits", fill=7)  # same exposure and detector, other pixels
    with pytest.raises(DatasetConflictError, match=r"different contents.*nothing was overwritten"):
        archive_file(backbone, changed)
    assert len(backbone.list("raw")) == 1 and len(obscore(backbone)) == 1
    ref = backbone.list("raw")[0]
    assert backbone.store().absolute(ref.path or "").read_bytes() == original
    assert verify(backbone).orphans == []  # the rejected copy was removed


def test_bad_files_fail_alone_and_the_batch_goes_on(backbone: Backbone, tmp_path: Path) -> None:
    good = lsstcam_raw(tmp_path / "good.fits", seq_num=5)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(lsstcam_raw(tmp_path / "whole.fits", seq_num=6).read_bytes()[:20000])
    not_fits = tmp_path / "notes.fits"
    not_fits.write_text("exposure log, not an image\n")
    missing_keys = lsstcam_raw(tmp_path / "nokeys.fits", seq_num=7, drop=("DATE-BEG", "MJD-BEG", "SEQNUM"))
    files = [
        REAL_FILES["wfpc2"],
        truncated,
        not_fits,
        missing_keys,
        REAL_FILES["no_keys"],
        good,
        REAL_FILES["wfpc2_next_day"],
    ]
    result = CliRunner().invoke(
        main, ["archive", *map(str, files), "--data-dir", str(backbone.deployment.data_dir)]
    )
    assert result.exit_code == 1
    # One line per file, "STATUS: FILE: message" (a progress bar may precede the first on the same line).
    lines = {}
    for f in files:
        line = next(line for line in result.output.splitlines() if f"{f}: " in line)
        status = line[: line.index(f"{f}: ")].rstrip(": ").split("]")[-1].split()[-1]
        lines[str(f)] = f"{status}: {line[line.index(f'{f}: ') :]}"
    assert lines[str(truncated)].startswith("FAILED") and "truncated FITS file" in lines[str(truncated)]
    assert "not a readable FITS file" in lines[str(not_fits)]
    assert "missing required header keys: SEQNUM; MJD-BEG or DATE-BEG" in lines[str(missing_keys)]
    assert "INSTRUME or TELESCOP" in lines[str(REAL_FILES["no_keys"])]
    # test1.fits repeats test0.fits's ROOTNAME one day later: a duplicate obs id, refused.
    assert "duplicate exposure id or obs id" in lines[str(REAL_FILES["wfpc2_next_day"])]
    assert lines[str(good)].startswith("archived:") and lines[str(REAL_FILES["wfpc2"])].startswith(
        "archived:"
    )
    assert "2 archived or already archived, 5 failed" in result.output
    assert len(backbone.list("raw")) == 2 and len(obscore(backbone)) == 2
    report = verify(backbone)
    assert report.healthy and report.orphans == [] and backbone.store().temp_files() == []


def test_watch_archives_what_appears(backbone: Backbone, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    lsstcam_raw(incoming / "one.fits", seq_num=1)
    lsstcam_raw(incoming / "two.fits", seq_num=2, slot="S12")
    seen = []
    results = watch(backbone, incoming, once=True, report=seen.append)
    assert sorted(r.status for r in results) == ["archived", "archived"] and seen == results
    assert {r.data_id["detector"] for r in backbone.list("raw")} == {94, 95}
    again = CliRunner().invoke(
        main, ["archive", "--watch", str(incoming), "--once", "--data-dir", str(backbone.deployment.data_dir)]
    )
    assert again.exit_code == 0 and again.output.count("unchanged") == 2
