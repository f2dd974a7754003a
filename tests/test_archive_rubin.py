"""Rubin raws through the archiver: real primary headers of every camera family (tests/data/headers/, from
lsst/obs_lsst's test headers), checked against values derived from Rubin's published rules (the obs_lsst
translators and camera descriptions), and per-detector sky regions checked against astropy's own TAN WCS."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvo
import sqlalchemy as sa
import yaml
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from dms.services.archiver.catchup import _day_obs_of
from dms.services.archiver.corrections import correct
from dms.services.archiver.errors import ArchiveError, ExposureConflictError, HeaderError
from dms.services.archiver.ingest import archive_file, archive_files, read_metadata
from dms.services.archiver.rows import CONSDB_INSTRUMENTS
from dms.services.archiver.rubin import exposure_id
from dms.services.backbone import Backbone
from dms.services.vo.server import running_server
from dms.services.vo.tap_schema import sync

pytest_plugins = ["backbone_support"]  # the deployment and backbone fixtures

HEADERS = Path(__file__).parent / "data" / "headers"
FIXTURES = sorted(p.stem for p in HEADERS.glob("*.yaml"))
NOT_ATTRIBUTES = {
    "begin_mjd_tai",
    "end_mjd_tai",
    "consdb",
    "s_region",
    "corrected_ra",
    "corrected_dec",
    "note",
}


def fixture(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((HEADERS / f"{name}.yaml").read_text()))


def write_raw(path: Path, header: dict[str, Any], **changes: Any) -> Path:
    """A raw with this primary header (None: an undefined value, as in the real files) and one amplifier."""
    primary = fits.PrimaryHDU()
    for key, value in {**header, **changes}.items():
        if key not in ("SIMPLE", "EXTEND"):
            primary.header[key] = value
    amplifier = fits.ImageHDU(np.arange(64, dtype=np.int32).reshape(8, 8), name="Segment10")
    fits.HDUList([primary, amplifier]).writeto(path, overwrite=True)
    return path


@pytest.mark.parametrize("name", FIXTURES)
def test_real_headers_translate_by_rubins_rules(name: str, tmp_path: Path) -> None:
    data = fixture(name)
    meta = read_metadata(write_raw(tmp_path / f"{name}.fits", data["header"]))
    expected = data["expected"]
    for key, value in expected.items():
        if key in NOT_ATTRIBUTES:
            continue
        got = getattr(meta, key)
        if isinstance(value, float):
            assert got == pytest.approx(value, abs=1e-9), key
        else:
            assert got == value, key
    if "begin_mjd_tai" in expected:
        assert meta.begin.tai.mjd == pytest.approx(expected["begin_mjd_tai"], abs=1e-9)
    if "end_mjd_tai" in expected:
        assert meta.end.tai.mjd == pytest.approx(expected["end_mjd_tai"], abs=1e-9)
    if "s_region" in expected:
        assert meta.footprint is None  # no position, no region (RA = DEC = 0 is a placeholder)
    if "note" in expected:
        assert any(expected["note"] in note for note in meta.notes), meta.notes


@pytest.mark.parametrize(
    ("fixture_name", "instrume", "changes", "instrument", "detector"),
    [
        ("lsstcam_MC_O_20250609_000578_R01_S01", "LSSTCam", {}, "LSSTCam", 1),
        ("lsstcam_MC_O_20250609_000578_R01_S01", "lsstcam", {}, "LSSTCam", 1),
        ("lsstcam_MC_O_20250609_000578_R01_S01", "LSSTCam-imSim", {}, "LSSTCam-imSim", 1),
        ("lsstcam_MC_O_20250609_000578_R01_S01", "LSST_CAMERA", {"TELCODE": "MC"}, "LSSTCam", 1),
        ("comcam_CC_O_20241108_000266_R22_S00", "comCam", {}, "LSSTComCam", 0),
        ("comcam_CC_O_20241108_000266_R22_S00", "COMCAM", {}, "LSSTComCam", 0),
        ("comcam_CC_O_20241108_000266_R22_S00", "LSSTComCam", {}, "LSSTComCam", 0),
        ("comcam_CC_O_20241108_000266_R22_S00", "LSST_CAMERA", {"TELCODE": "CC"}, "LSSTComCam", 0),
        ("comcamsim_CC_S_20240321_000093_R22_S22", "LSSTComCamSim", {}, "LSSTComCamSim", 8),
        ("latiss_AT_O_20240624_000169", "LSST_ATISS", {}, "LATISS", 0),
    ],
)
def test_every_instrume_value_the_cameras_write_is_recognised(
    tmp_path: Path, fixture_name: str, instrume: str, changes: dict, instrument: str, detector: int
) -> None:
    header = fixture(fixture_name)["header"]
    meta = read_metadata(write_raw(tmp_path / "raw.fits", header, INSTRUME=instrume, **changes))
    assert (meta.instrument, meta.detector) == (instrument, detector)


def test_exposure_ids_follow_rubins_controller_offsets() -> None:
    # obs_lsst compute_exposure_id: + index("OCHPQS") x 1000 years on day_obs; C shares O's counter after
    # day_obs 20231004, P/Q/S after 20250417 (no offset then).
    assert exposure_id(20250609, 578, "O") == 2025060900578
    assert exposure_id(20230512, 21, "C") == 3023051200021
    assert exposure_id(20231004, 21, "C") == 3023100400021
    assert exposure_id(20231005, 21, "C") == 2023100500021
    assert exposure_id(20100217, 32, "H") == 4010021700032
    assert exposure_id(20260101, 32, "H") == 4026010100032  # H never unified
    assert [exposure_id(20240117, 7, c) for c in "PQS"] == [5024011700007, 6024011700007, 7024011700007]
    assert [exposure_id(20250418, 7, c) for c in "PQS"] == [2025041800007] * 3
    assert exposure_id(20190319, 1, None) == 2019031900001  # no controller (test stands): no offset
    with pytest.raises(ValueError, match="controller 'X'"):
        exposure_id(20250101, 1, "X")
    # and back: catch-up archiving recovers day_obs from a logged exposure id
    assert [_day_obs_of("LSSTCam", i) for i in (3019031900001, 7024011700007, 2025060900578)] == [
        20190319,
        20240117,
        20250609,
    ]


def test_corrections_table_converts_2019_latiss_radians() -> None:
    header = fixture("latiss_AT_O_20191113_000061")["header"]
    begin = Time(header["MJD-OBS"], format="mjd", scale="tai")
    overrides, notes = correct(header.get, "LATISS", 20191113, 61, begin)
    assert overrides["RA"] == pytest.approx(math.degrees(4.71238898038469)) == pytest.approx(270.0)
    assert overrides["DEC"] == pytest.approx(-20.0)
    assert (
        overrides["RASTART"] is None and overrides["DECSTART"] is None and overrides["IMGTYPE"] == "ENGTEST"
    )
    assert any("radians" in n for n in notes)
    later = Time("2020-06-01T00:00:00", scale="tai")
    assert correct(header.get, "LATISS", 20200601, 61, later)[0] == {"SHUTTIME": None}


def test_comcam_band_written_as_filter_is_corrected(tmp_path: Path) -> None:
    header = fixture("comcam_CC_O_20241108_000266_R22_S00")["header"]
    on_sky = read_metadata(write_raw(tmp_path / "chile.fits", header, FILTER="r"))
    assert on_sky.physical_filter == "empty" and any("no filter in the beam" in n for n in on_sky.notes)
    lab = {k: v for k, v in header.items() if not k.startswith(("MJD-", "DATE-"))}
    tucson = read_metadata(write_raw(tmp_path / "lab.fits", lab, FILTER="r", **{"MJD-OBS": 58630.5}))
    assert tucson.physical_filter == "r_03"


def test_rotpa_corrections_cover_rubins_date_ranges(tmp_path: Path) -> None:
    header = fixture("lsstcam_MC_O_20250415_000060_R01_S01")["header"]
    rotpa = header["ROTPA"]
    for day, seq, expected in (
        ("20250301", 5, rotpa),  # before the range
        ("20250302", 5, rotpa - 90.0),
        ("20250421", 5, rotpa - 90.0),
        ("20250422", 250, (rotpa - 180.0 + 180.0) % 360.0 - 180.0),  # first half-night: 180 deg, wrapped
        ("20250422", 251, rotpa),
    ):
        meta = read_metadata(write_raw(tmp_path / f"{day}_{seq}.fits", header, DAYOBS=day, SEQNUM=seq))
        assert meta.sky_angle == pytest.approx(expected), (day, seq)


def test_every_ccd_of_an_exposure_archives_with_consdb_rows_and_regions(
    backbone: Backbone, tmp_path: Path
) -> None:
    header = fixture("lsstcam_MC_O_20250609_000578_R01_S01")["header"]
    files = [
        write_raw(tmp_path / "s01.fits", header),
        write_raw(tmp_path / "s02.fits", header, CCDSLOT="S02", LSST_NUM="ITL-3800C-136"),
    ]
    results = archive_files(backbone, files)
    assert [r.status for r in results] == ["archived", "archived"], [r.message for r in results]
    assert "z_20" in results[0].message  # the correction is reported
    with backbone.begin() as conn:
        exposure = conn.execute(sa.text("SELECT * FROM dms.exposure")).mappings().one()
        cdb = conn.execute(sa.text("SELECT * FROM cdb_lsstcam.exposure")).mappings().one()
        ccds = (
            conn.execute(sa.text("SELECT * FROM cdb_lsstcam.ccdexposure ORDER BY detector")).mappings().all()
        )
        obscore = (
            conn.execute(sa.text('SELECT * FROM ivoa."ObsCore" ORDER BY lsst_detector')).mappings().all()
        )
    assert exposure["instrument"] == "LSSTCam" and exposure["observation_type"] == "science"
    assert exposure["sky_angle"] == pytest.approx(header["ROTPA"])
    assert exposure["azimuth"] == pytest.approx(header["AZSTART"])
    assert exposure["zenith_angle"] == pytest.approx(90.0 - header["ELSTART"])
    assert (cdb["exposure_id"], cdb["physical_filter"], cdb["band"]) == (2025060900578, "z_20", "z")
    assert cdb["exp_time"] == pytest.approx(header["SHUTTIME"]) and cdb["img_type"] == "science"
    assert (cdb["s_ra"], cdb["s_dec"]) == (
        pytest.approx(header["RASTART"]),
        pytest.approx(header["DECSTART"]),
    )
    assert [c["detector"] for c in ccds] == [1, 2] and all(c["s_region"] for c in ccds)
    assert [r["lsst_detector"] for r in obscore] == [1, 2]
    assert all(r["s_region"].startswith("POLYGON ICRS ") for r in obscore)


def _astropy_corners(ra: float, dec: float, rotpa: float, scale: float, flip_x: bool, corners_mm: np.ndarray):
    """Sky corners by astropy's TAN WCS, pixels = focal-plane mm, CD from the afw makeCdMatrix convention:
    +Y at position angle rotpa (N through E); +X towards E (flip_x) or W at rotpa = 0."""
    theta = math.radians(rotpa)
    step = scale / 3600.0
    x_dir = (math.cos(theta), -math.sin(theta)) if flip_x else (-math.cos(theta), math.sin(theta))
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1.0, 1.0]  # origin 0 below: pixel (0, 0) is the boresight
    wcs.wcs.cd = step * np.array([[x_dir[0], math.sin(theta)], [x_dir[1], math.cos(theta)]])
    sky = wcs.all_pix2world(corners_mm, 0)
    return sorted((round(float(r) % 360, 7), round(float(d), 7)) for r, d in sky)


def _polygon(stcs: str) -> list[tuple[float, float]]:
    numbers = [float(v) for v in stcs.split()[2:]]
    return sorted((round(numbers[i] % 360, 7), round(numbers[i + 1], 7)) for i in range(0, len(numbers), 2))


# Corners in focal-plane mm from Rubin's layout facts: LSSTCam raft R01 at (-127, -254) mm, S01 at (0, -42.25)
# within it, ITL 4072 x 4000 pixels of 10 um; ComCam R22_S00 at (-42.25, -42.25); LATISS: one ITL, centred.
REGION_CASES = [
    ("lsstcam_MC_O_20250609_000578_R01_S01", (-127.0, -296.25), (40.72, 40.0), 20.0, False),
    ("comcam_CC_O_20241108_000266_R22_S00", (-42.25, -42.25), (40.72, 40.0), 20.0, False),
    ("latiss_AT_O_20240624_000169", (0.0, 0.0), (40.72, 40.0), 10.112, True),
]


@pytest.mark.parametrize(("name", "centre", "size", "scale", "flip_x"), REGION_CASES)
def test_detector_regions_equal_astropys_wcs_of_the_camera_geometry(
    backbone: Backbone, tmp_path: Path, name: str, centre: tuple, size: tuple, scale: float, flip_x: bool
) -> None:
    header = fixture(name)["header"]
    assert archive_file(backbone, write_raw(tmp_path / "raw.fits", header)).status == "archived"
    with backbone.begin() as conn:
        row = (
            conn.execute(sa.text('SELECT s_region, s_ra, s_dec, s_fov FROM ivoa."ObsCore"')).mappings().one()
        )
    (cx, cy), (w, h) = centre, size
    corners = np.array(
        [
            [cx - w / 2, cy - h / 2],
            [cx + w / 2, cy - h / 2],
            [cx + w / 2, cy + h / 2],
            [cx - w / 2, cy + h / 2],
        ]
    )
    expected = _astropy_corners(
        header["RASTART"], header["DECSTART"], header["ROTPA"], scale, flip_x, corners
    )
    got = _polygon(row["s_region"])
    assert np.allclose(np.array(got), np.array(expected), atol=2e-7), (got, expected)
    diagonal = math.hypot(w, h) * scale / 3600.0
    assert row["s_fov"] == pytest.approx(diagonal, rel=1e-3)  # the detector, not the whole focal plane


def test_sia_position_search_finds_the_raw_of_the_detector_there(backbone: Backbone, tmp_path: Path) -> None:
    header = fixture("lsstcam_MC_O_20250609_000578_R01_S01")["header"]
    assert archive_file(backbone, write_raw(tmp_path / "raw.fits", header)).status == "archived"
    with backbone.begin() as conn:
        row = conn.execute(sa.text('SELECT obs_id, s_ra, s_dec FROM ivoa."ObsCore"')).one()
        sync(conn)  # publish ivoa.ObsCore in TAP_SCHEMA, as `dms serve` does
    boresight = (header["RASTART"], header["DECSTART"])
    with running_server(backbone.deployment) as url:
        sia = pyvo.dal.SIA2Service(f"{url}/sia")
        on_detector = sia.search(pos=(row.s_ra, row.s_dec, 0.01))
        at_boresight = sia.search(pos=(*boresight, 0.01))  # R01_S01 is 1.8 deg from the boresight
    assert [r["obs_id"] for r in on_detector] == [header["OBSID"]]
    assert len(at_boresight) == 0


def test_second_controller_exposure_with_the_same_day_and_seq_archives_apart(
    backbone: Backbone, tmp_path: Path
) -> None:
    header = fixture("lsstcam_MC_C_20190319_000001_R10_S02")["header"]
    ccs = write_raw(tmp_path / "ccs.fits", header)
    ocs = write_raw(tmp_path / "ocs.fits", header, CONTRLLR="O", OBSID="MC_O_20190319_000001")
    results = archive_files(backbone, [ccs, ocs])
    assert [r.status for r in results] == ["archived", "archived"], [r.message for r in results]
    with backbone.begin() as conn:
        ids = conn.execute(sa.text("SELECT id FROM dms.exposure ORDER BY id")).scalars().all()
    assert ids == [2019031900001, 3019031900001]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"EXPTIME": "thirty"}, "EXPTIME 'thirty' is not a number"),
        ({"SEQNUM": 123456}, "no Rubin exposure id.*outside 0..99999"),
        ({"CONTRLLR": "Z"}, "controller 'Z' is not one of"),
        ({"RAFTBAY": "R99"}, "LSSTCam has no detector R99_S01"),
        ({"DATE-BEG": "yesterday", "MJD-BEG": None}, "unreadable MJD-BEG/DATE-BEG"),
    ],
)
def test_bad_rubin_headers_get_a_clear_error(tmp_path: Path, changes: dict, message: str) -> None:
    header = fixture("lsstcam_MC_O_20250609_000578_R01_S01")["header"]
    with pytest.raises(HeaderError, match=message):
        read_metadata(write_raw(tmp_path / "raw.fits", header, **changes))


def test_placeholder_1970_start_without_a_file_date_is_refused(tmp_path: Path) -> None:
    header = dict(fixture("latiss_AT_O_20191113_000061")["header"])
    header.pop("DATE")
    header.pop("MJD")
    with pytest.raises(HeaderError, match=r"1970 placeholder.*nothing archived"):
        read_metadata(write_raw(tmp_path / "raw.fits", header))


def test_end_before_start_names_the_real_cause(backbone: Backbone, tmp_path: Path) -> None:
    header = fixture("lsstcam_MC_O_20250609_000578_R01_S01")["header"]
    reversed_times = write_raw(
        tmp_path / "bad.fits", header, **{"DATE-END": "2025-06-10T07:31:50.000", "MJD-END": 60836.31377314815}
    )
    with pytest.raises(HeaderError, match=r"ends before it begins.*DATE-END/MJD-END.*DATE-BEG") as caught:
        archive_file(backbone, reversed_times)
    assert "clashes" not in str(caught.value)
    # Metadata that gets past the translator (given by a caller) meets the database's check: reported as that.
    good = write_raw(tmp_path / "good.fits", header)
    meta = read_metadata(good)
    broken = dataclasses.replace(meta, end=meta.begin - 5 * (meta.end - meta.begin))
    with pytest.raises(
        ArchiveError, match=r"ck_exposure_times: the exposure ends before it begins"
    ) as db_error:
        archive_file(backbone, good, metadata=broken)
    assert not isinstance(db_error.value, ExposureConflictError) and "clashes" not in str(db_error.value)
    assert backbone.list("raw") == [] and list(backbone.store().iter_objects()) == []


def test_shipped_camera_geometry_matches_rubins_camera_description() -> None:
    from dms.services.archiver.camera import camera

    lsstcam = camera("LSSTCam")
    assert lsstcam is not None and camera("LSSTCamSim") is lsstcam
    detectors = sorted(lsstcam.detectors.values(), key=lambda d: d.id)
    assert [d.id for d in detectors] == list(range(205))
    purposes = [d.purpose for d in detectors]
    assert (purposes.count("SCIENCE"), purposes.count("WAVEFRONT"), purposes.count("GUIDER")) == (189, 8, 8)
    # obs_lsst lsstCam: R01_S00 = 0, R22_S11 = 94 at the centre, R43_S22 = 188, R00_SG0 = 189, R44_SW1 = 204
    assert (detectors[0].name, detectors[94].name, detectors[188].name) == ("R01_S00", "R22_S11", "R43_S22")
    assert (detectors[189].name, detectors[204].name) == ("R00_SG0", "R44_SW1")
    assert (detectors[94].x, detectors[94].y) == (0.0, 0.0)
    for d in detectors[:189]:  # rafts on a 127 mm grid, sensors on 42.25 mm within a raft
        r, c, i, j = int(d.name[1]), int(d.name[2]), int(d.name[5]), int(d.name[6])
        assert (d.x, d.y) == (
            pytest.approx((c - 2) * 127 + (j - 1) * 42.25),
            pytest.approx((r - 2) * 127 + (i - 1) * 42.25),
        )
    # wavefront sensors are half-height ITL devices
    wavefront = lsstcam.detectors["R00_SW0"]
    assert (wavefront.nx, wavefront.ny) == (4072, 2000)
    comcam = camera("LSSTComCam")
    assert comcam is not None and [
        comcam.detectors[f"R22_S{i}{j}"].id for i in range(3) for j in range(3)
    ] == list(range(9))


def test_sky_orientation_convention_agrees_with_imsims_own_wcs() -> None:
    """The footprint's orientation (ROTPA = position angle of the focal plane's +Y; +X west of it for
    LSSTCam) against the WCS imSim wrote into the same LSSTCamSim file: same directions within 1 deg."""
    from dms.services.archiver.camera import camera

    data = fixture("lsstcamsim_MC_S_20240321_000720_R22_S11")
    amp = data["amplifier_wcs"]
    flip = np.diag([-1.0, -1.0])  # DETSEC [512:1,4004:2003]: amplifier axes run against the detector's
    detector_cd = np.array([[amp["CD1_1"], amp["CD1_2"]], [amp["CD2_1"], amp["CD2_2"]]]) @ flip
    lsstcam = camera("LSSTCamSim")
    assert lsstcam is not None
    ours = lsstcam.sky_matrix(data["header"]["ROTPA"]) * lsstcam.pixel_size  # degrees per pixel
    for axis in range(2):
        theirs_dir = detector_cd[:, axis] / np.linalg.norm(detector_cd[:, axis])
        ours_dir = ours[:, axis] / np.linalg.norm(ours[:, axis])
        assert math.degrees(math.acos(min(1.0, float(theirs_dir @ ours_dir)))) < 1.0, axis
    # and the scale: 0.2"/pixel within imSim's distortion at the field centre (1%)
    assert np.linalg.norm(ours[:, 0]) == pytest.approx(np.linalg.norm(detector_cd[:, 0]), rel=0.01)


CONSDB_FIXTURES = [name for name in FIXTURES if fixture(name)["expected"].get("consdb")]


@pytest.mark.parametrize("name", CONSDB_FIXTURES)
def test_consdb_rows_in_the_instruments_own_schema(backbone: Backbone, tmp_path: Path, name: str) -> None:
    """LSSTCam, ComCam and LATISS exposures each get their rows in their camera's ConsDB schema (Rubin's
    cdb_lsstcam, cdb_lsstcomcam, cdb_latiss), with the values Rubin's rules give."""
    data = fixture(name)
    expected = data["expected"]
    results = archive_files(backbone, [write_raw(tmp_path / f"{name}.fits", data["header"])])
    assert [r.status for r in results] == ["archived"], [r.message for r in results]
    namespace = CONSDB_INSTRUMENTS[expected["instrument"]]
    with backbone.begin() as conn:
        exposure = conn.execute(sa.text(f"SELECT * FROM {namespace}.exposure")).mappings().one()
        ccd = conn.execute(sa.text(f"SELECT * FROM {namespace}.ccdexposure")).mappings().one()
        others = [
            other
            for other in set(CONSDB_INSTRUMENTS.values()) - {namespace}
            if conn.execute(sa.text(f"SELECT count(*) FROM {other}.exposure")).scalar_one()
        ]
    assert others == []
    assert exposure["exposure_id"] == expected["exposure_id"]
    assert exposure["physical_filter"] == expected["physical_filter"]
    if "band" in expected:
        assert exposure["band"] == expected["band"]
    assert exposure["exp_time"] == pytest.approx(expected["exposure_time"])
    assert exposure["img_type"] == expected["observation_type"]
    if expected.get("tracking_ra") is not None:
        assert exposure["s_ra"] == pytest.approx(expected["tracking_ra"])
        assert exposure["s_dec"] == pytest.approx(expected["tracking_dec"])
    assert (ccd["exposure_id"], ccd["detector"]) == (expected["exposure_id"], expected["detector"])


def test_cameras_without_a_consdb_schema_write_none(backbone: Backbone, tmp_path: Path) -> None:
    data = fixture("lsstcamsim_MC_S_20240321_000720_R22_S11")
    assert data["expected"]["instrument"] not in CONSDB_INSTRUMENTS
    results = archive_files(backbone, [write_raw(tmp_path / "sim.fits", data["header"])])
    assert [r.status for r in results] == ["archived"], [r.message for r in results]
    with backbone.begin() as conn:
        counts = [
            conn.execute(sa.text(f"SELECT count(*) FROM {namespace}.exposure")).scalar_one()
            for namespace in CONSDB_INSTRUMENTS.values()
        ]
    assert counts == [0, 0, 0, 0]


def test_sia_finds_raws_by_their_footprint_not_their_bounding_circle(
    backbone: Backbone, tmp_path: Path
) -> None:
    """Searches beside one edge of a real LSSTCam detector footprint (R01_S01): a circle reaching over the
    edge finds the raw though the image centre is far outside it; a circle just outside the edge does not,
    though it lies within the image's bounding circle (centre + s_fov / 2, what SIA matched before); a RANGE
    around one corner finds it though the centre is outside the range."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from regions_support import meets

    from dms.query import regions

    header = fixture("lsstcam_MC_O_20250609_000578_R01_S01")["header"]
    assert archive_file(backbone, write_raw(tmp_path / "raw.fits", header)).status == "archived"
    with backbone.begin() as conn:
        row = conn.execute(
            sa.text(
                "SELECT obs_id, s_ra, s_dec, s_fov, s_region, s_region_shape, s_region_moc "
                'FROM ivoa."ObsCore"'
            )
        ).one()
        sync(conn)
    assert (row.s_region_shape, row.s_region_moc) == tuple(regions.column_values(row.s_region).values())
    shape = list(row.s_region_shape)
    centre = SkyCoord(row.s_ra * u.deg, row.s_dec * u.deg)
    a, b = SkyCoord(shape[0] * u.deg, shape[1] * u.deg), SkyCoord(shape[2] * u.deg, shape[3] * u.deg)
    middle = a.directional_offset_by(a.position_angle(b), a.separation(b) / 2)

    def beyond_edge(distance: float) -> SkyCoord:
        angle = centre.position_angle(middle)
        return centre.directional_offset_by(angle, centre.separation(middle) + distance * u.deg)

    over, outside = beyond_edge(0.02), beyond_edge(0.03)
    reaching = [over.ra.deg, over.dec.deg, 0.03]
    beside = [outside.ra.deg, outside.dec.deg, 0.01]
    assert meets(shape, reaching) is True and meets(shape, beside) is False  # the independent answer
    assert centre.separation(over).deg > reaching[2]  # the image centre is outside the search circle
    assert centre.separation(outside).deg <= beside[2] + row.s_fov / 2  # inside the old bounding circle
    corner = (shape[4], shape[5])
    ranged = (corner[0] - 0.02, corner[0] + 0.02, corner[1] - 0.02, corner[1] + 0.02)
    assert not (ranged[0] <= row.s_ra <= ranged[1] and ranged[2] <= row.s_dec <= ranged[3])
    with running_server(backbone.deployment) as url:
        sia = pyvo.dal.SIA2Service(f"{url}/sia")
        found_reaching = [r["obs_id"] for r in sia.search(pos=tuple(reaching))]
        found_beside = [r["obs_id"] for r in sia.search(pos=tuple(beside))]
        found_range = [r["obs_id"] for r in sia.search(pos=ranged)]
        found_polygon = [
            r["obs_id"]
            for r in sia.search(
                pos=(
                    corner[0] - 0.02,
                    corner[1] - 0.02,
                    corner[0] + 0.02,
                    corner[1] - 0.02,
                    corner[0],
                    corner[1] + 0.02,
                )
            )
        ]
    assert found_reaching == [header["OBSID"]]
    assert found_beside == []
    assert found_range == [header["OBSID"]]
    assert found_polygon == [header["OBSID"]]
